"""`python -m gpts.jobs run JOB_ID`: the worker process of one fine-tuning job (see worker.py)."""

import argparse
import sys

from gpts.jobs.worker import main

parser = argparse.ArgumentParser(prog="python -m gpts.jobs", description="Run one fine-tuning job of the store.")
parser.add_argument("command", choices=["run"])
parser.add_argument("job_id")
args = parser.parse_args()
sys.exit(main(args.job_id))
