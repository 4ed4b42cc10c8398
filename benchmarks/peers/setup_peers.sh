#!/usr/bin/env bash
# Throwaway environment for the peer tools that benchmarks/run.py can run (never the project's .venv).
#
#   bash benchmarks/peers/setup_peers.sh [DIR]      # default DIR: /tmp/ntf-peers-venv
#
# It is a venv of the same Python that sees the project's .venv packages (numpy, scipy, anndata,
# scikit-learn, matplotlib) through a .pth file and adds only what the peers need from PyPI:
# paste-bio (PASTE, Zeira et al. 2022), its optimal-transport library POT (pinned), and seaborn (imported by
# paste). run.py finds it at DIR, or wherever $NTF_PEERS_PYTHON points.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
dir="${1:-/tmp/ntf-peers-venv}"
py=".venv/bin/python"
base="$("$py" -c 'import sys; print(sys.base_prefix)')/bin/python3"
"$base" -m venv "$dir"
site="$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/ntf_main_venv.pth"
# POT 0.9.4: newer POT calls the line search with 6 arguments, paste-bio 1.4.0 defines 5 (TypeError);
# older POT wheels are built against NumPy 1 and do not import with the NumPy 2 of .venv.
"$dir/bin/pip" install -q paste-bio "pot==0.9.4" seaborn
"$dir/bin/python" -c 'import paste, ot; print("PASTE", getattr(paste, "__version__", "?"), "POT", ot.__version__, "ready in '"$dir"'")'
