"""`python main.py ...` is the same as the `persona-studio ...` console script."""
import sys

from persona_studio.cli import main

if __name__ == "__main__":
    sys.exit(main())
