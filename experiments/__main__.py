"""``python -m rnn_ntk.experiments [NAME ...] [--scale ...]``: the same as ``rnn-ntk reproduce``."""
import sys

from rnn_ntk.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", *sys.argv[1:]]))
