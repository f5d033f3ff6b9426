"""lm-evaluation-harness model "gpts": the harness's tasks on any gpts model reference.

    pip install lm_eval   (in a clone: pip install -e '.[lm-eval]')
    python -m gpts.lm_eval_adapter --model gpts --model_args model=default --tasks hellaswag --limit 100
    lm_eval.simple_evaluate(model="gpts", model_args="model=PATH,dtype=bfloat16", tasks=[...])  # after importing this

The harness finds models only in its own registry (lm_eval 0.4.13 reads no entry points), so this module must
be imported before `--model gpts` resolves; `python -m gpts.lm_eval_adapter ARGS` is the harness's own CLI (`lm_eval
ARGS`) with it imported. Model arguments: model (a model reference: default, PATH, PATH.gguf, hf:ORG/NAME), dtype
(float32 or bfloat16), batch_tokens (tokens per scoring pass); --device and --batch_size (generation batch) as usual.

Scoring is gpts' own (`evaluate.score_continuations`: one prefix pass shared by all its continuations, batches
packed by tokens); the text is split into tokens by the harness's own TemplateLM, windows for rolling
log-likelihood are the harness's own, and generation is gpts' `generate` with `until` as stop strings.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import lm_eval.models  # noqa: F401  the harness's own models: its registry loads them only while it is empty
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import normalize_gen_kwargs
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

import gpts
from gpts.errors import GptsError
from gpts.evaluate import BATCH_TOKENS, GENERATE_BATCH, generate_in_batches, score_continuations
from gpts.events import Meter, ignore
from gpts.terminal import EventView, print_error
from gpts.tokenizer import CHATML_TEMPLATE

if TYPE_CHECKING:
    from lm_eval.api.instance import Instance

log = logging.getLogger(__name__)

# Sampling settings a task's generation_kwargs may carry; `until`, `max_gen_toks` and `do_sample` are read apart.
SAMPLING_KWARGS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed")


@register_model("gpts")
class GptsLM(TemplateLM):
    """A gpts model as an lm-evaluation-harness LM (single process)."""

    def __init__(self, model: str = "default", dtype: str = "float32", device: str | None = None,
                 batch_size: int | str = 1, max_batch_size: int | None = None, batch_tokens: int = BATCH_TOKENS,
                 **unknown: Any):
        super().__init__()
        if unknown:
            raise GptsError(f"Unknown model argument(s) for gpts: {', '.join(sorted(unknown))}.",
                            "Use --model_args model=REF[,dtype=float32|bfloat16][,batch_tokens=N].")
        self.loaded = gpts.load(str(model), dtype=dtype, device=_pick_device(device))
        self.gpt = self.loaded.gpt
        self.tokenizer = self.loaded.tokenizer
        self._device = self.gpt.device
        self.batch_tokens = int(batch_tokens)
        # Scoring batches by tokens; batch_size only sets how many prompts generate together ("auto": gpts' default).
        auto = str(batch_size).startswith("auto")
        self.generate_batch = min(GENERATE_BATCH, max_batch_size or GENERATE_BATCH) if auto else int(batch_size)
        if self.batch_tokens < 1 or self.generate_batch < 1:
            raise GptsError(f"batch_tokens={batch_tokens} and batch_size={batch_size} must be 1 or more.",
                            "Pass whole numbers >= 1 (or --batch_size auto).")

    # -- what TemplateLM asks for ------------------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int | None:
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context (and the start of a rolling text) stands for: BOS, else EOS, as for the harness's
        HF model."""
        token = self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self.tokenizer.eos_id
        if token is None:
            raise GptsError("An empty context needs a BOS or EOS token to stand for it, and this model's tokenizer "
                            "has neither.", "Use tasks whose requests all have a context, or a tokenizer with BOS/EOS.")
        return token

    @property
    def max_length(self) -> int:
        return self.gpt.config.context_length

    @property
    def max_gen_toks(self) -> int:
        return 256  # the harness's default for HF models

    @property
    def tokenizer_name(self) -> str:
        return self.loaded.ref.ref.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Token ids; None means the model's own choice (BOS first when it adds one), unless the text starts with
        BOS already (a chat template may write it)."""
        if add_special_tokens is None:
            bos = self.tokenizer.bos_token
            add_special_tokens = not (bos and string.startswith(bos))
        return self.tokenizer.encode(string, add_special=add_special_tokens)

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        # Requests with the same context tokens (the choices of one question) share one prefix pass.
        by_context: dict[tuple[int, ...], list[int]] = {}
        for i, (_, context, _) in enumerate(requests):
            by_context.setdefault(tuple(context), []).append(i)
        groups = [(context, [requests[i][2] for i in members]) for context, members in by_context.items()]
        with _meter(not disable_tqdm, "loglikelihood", len(groups)) as meter:
            scores = score_continuations(self.gpt, groups, self.batch_tokens, meter.advance, greedy=True)
        results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        for members, group_scores in zip(by_context.values(), scores):
            for i, (logprob, greedy) in zip(members, group_scores):
                results[i] = (logprob, greedy)
                self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
        return results

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Each text's whole log-likelihood in the harness's windows: the first conditioned on the prefix token,
        each later one predicting the next max_length tokens with a full context of the tokens before them."""
        groups, owner = [], []
        for i, (text,) in enumerate(req.args for req in requests):
            windows = get_rolling_token_windows(self.tok_encode(text), self.prefix_token_id, self.max_length, 1)
            for context, predicted in map(make_disjoint_window, windows):
                groups.append((context, [predicted]))
                owner.append(i)
        with _meter(not disable_tqdm, "loglikelihood_rolling", len(groups)) as meter:
            scores = score_continuations(self.gpt, groups, self.batch_tokens, meter.advance)
        totals = [0.0] * len(requests)
        for i, (logprob,) in zip(owner, scores):
            totals[i] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """gpts generation from each context; the text stops before the first `until` string (or at EOS).
        do_sample false (or temperature 0) is greedy; prompts too long for max_gen_toks lose their start."""
        by_kwargs: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            by_kwargs.setdefault(repr(sorted(req.args[1].items())), []).append(i)
        outputs = [""] * len(requests)
        with _meter(not disable_tqdm, "generate_until", len(requests)) as meter:
            for members in by_kwargs.values():
                options = self._generation_options(requests[members[0]].args[1])
                prompts = [self.tok_encode(requests[i].args[0]) for i in members]
                completions = generate_in_batches(self.loaded, prompts, self.generate_batch, meter.advance,
                                                  **options)
                for i, completion in zip(members, completions):
                    outputs[i] = completion.text
                    self.cache_hook.add_partial("generate_until", requests[i].args, outputs[i])
        return outputs

    def _generation_options(self, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = dict(normalize_gen_kwargs(gen_kwargs, self.max_gen_toks))
        options = {"max_new_tokens": kwargs.pop("max_gen_toks"), "stop": [s for s in kwargs.pop("until") if s],
                   "truncate": True}
        if not kwargs.pop("do_sample"):
            kwargs["temperature"] = 0.0
        unknown = sorted(set(kwargs) - set(SAMPLING_KWARGS))
        if unknown:
            raise GptsError(f"gpts does not know the generation setting(s) {', '.join(unknown)} of this task.",
                            f"gpts understands until, max_gen_toks, do_sample and {', '.join(SAMPLING_KWARGS)}.")
        return options | kwargs

    # -- chat templates (--apply_chat_template) -------------------------------------------------------------------

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The template apply_chat_template renders: the model's own, else gpts' fallback, ChatML."""
        return (self.tokenizer.chat_template or CHATML_TEMPLATE) if chat_template else None

    def get_model_info(self) -> dict[str, Any]:
        """Goes into the results' "config"."""
        return {"model_source": self.loaded.ref.describe(), "model_dtype": str(next(self.gpt.parameters()).dtype),
                "model_num_parameters": self.gpt.num_params()}


@contextmanager
def _meter(show: bool, task: str, total: int) -> Iterator[Meter]:
    """Progress of one kind of request, drawn on stderr as gpts draws it (the harness's --disable_tqdm hides it)."""
    if not show:
        yield Meter(ignore, task, total)
        return
    with EventView(transient=True) as view:
        meter = Meter(view, task, total, "requests")
        yield meter
        meter.done()


def _pick_device(requested: str | None) -> str:
    """The harness's CLI asks for cuda:0 unless told otherwise; without CUDA that means the CPU, as for its HF model."""
    cuda = torch.cuda.is_available()
    if requested is None:
        return "cuda" if cuda else "cpu"
    if requested.startswith("cuda") and not cuda:
        log.warning("CUDA is not available: running on the CPU instead of %s.", requested)
        return "cpu"
    return requested


def main() -> None:
    """`lm_eval` with the gpts model registered: same arguments (sys.argv), same output."""
    from lm_eval.__main__ import cli_evaluate

    try:
        cli_evaluate()
    except GptsError as e:  # what the user got wrong, without a traceback, as the gpts CLI prints it
        print_error(e.problem, e.fix)
        sys.exit(1)


if __name__ == "__main__":
    main()
