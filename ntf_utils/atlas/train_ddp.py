"""``torchrun --nproc_per_node=N -m ntf_utils.atlas.train_ddp STORE --out FIELD``: see :mod:`._distributed`."""

from ._distributed import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
