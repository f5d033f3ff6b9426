"""gpts: build, run, train and serve GPT models on your own machine, offline by default."""

from gpts.api import LoadedModel, load
from gpts.config import Config
from gpts.errors import GptsError
from gpts.generate import Completion, GenerationConfig, StreamEvent
from gpts.model import GPT

__all__ = ["Completion", "Config", "GenerationConfig", "GPT", "GptsError", "LoadedModel", "StreamEvent", "load"]
