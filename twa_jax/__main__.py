"""``python -m twa_jax COMMAND ...``: the package's command line.

Commands:
    sweep    run, resume and watch parameter sweeps (``tw.sweep``) from a spec file, in this
             process, in a process pool, on SLURM (submitit) or on a dask cluster;
             ``python -m twa_jax sweep --help`` for details.
"""

from __future__ import annotations

import sys

COMMANDS = ("sweep",)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "sweep":
        from ._sweep_cli import main as sweep_main

        return sweep_main(rest)
    print(f"python -m twa_jax: unknown command {command!r}; commands: {', '.join(COMMANDS)} "
          "(python -m twa_jax --help)", file=sys.stderr)
    return 2


if __name__ == "__main__":  # not when a spawned worker re-imports this module as __mp_main__
    sys.exit(main())
