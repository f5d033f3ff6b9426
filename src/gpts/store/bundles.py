"""A GPT as one file to share (NAME.gpt): its spec, its knowledge and evaluation files, and its LoRA adapter when
its model is one (the adapter names its base model, which the receiver must have). The archive format and its
safety checks are gpts.store.archive; this module maps a GPT to an archive and back, and fetches one from another
gpts server's export endpoint (a team's shared store)."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from gpts.errors import GptsError, NotFoundError, naming
from gpts.events import Meter, Report, ignore
from gpts.fileio import check_writable
from gpts.refs import is_adapter_dir
from gpts.spec import check_slug, parse_spec
from gpts.store.archive import Limits, read_bundle, write_bundle
from gpts.store.catalogue import FileSource, Gpt, check_free, create_gpt, file_bytes, get_gpt
from gpts.store.db import connect, store_dir

# What loading an adapter needs (gpts.lora); checkpoints, metrics and plots of its run stay behind.
ADAPTER_FILES = ("adapter_config.json", "adapter.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "task.json")


def _adapter_dir(model: str) -> Path | None:
    path = Path(model).expanduser()
    if not path.is_dir():
        return None
    return path if is_adapter_dir(path) else None


def export_gpt(slug: str, out: str | Path | None = None, version: int | None = None) -> Path:
    """Write the GPT (its current version, or `version`) to `out` (default: SLUG.gpt here)."""
    gpt = get_gpt(slug, version)
    out = Path(out or f"{slug}.gpt")
    check_writable(out)
    if out.is_dir() or (out.exists() and not is_bundle(out)):  # replace an older export, never anything else
        raise GptsError(f"{out} exists and is not a .gpt bundle; gpts will not replace it.",
                        "Choose another path for the bundle, e.g. --out " + f"{slug}.gpt.")
    members: dict[str, Path] = {}
    for f in gpt.files:
        members[f"{f.kind}/{f.name}"] = file_bytes(gpt, f.kind, f.name)
    adapter = _adapter_dir(gpt.spec.model)
    if adapter is not None:
        for name in ADAPTER_FILES:
            if (adapter / name).is_file():
                members[f"adapter/{name}"] = adapter / name
    spec = gpt.spec.to_dict()
    if adapter is not None:
        spec["model"] = "adapter"  # the receiver's copy of the adapter; its config names the base model
    return write_bundle(out, spec, members)


def import_gpt(path: str | Path, slug: str | None = None, report: Report = ignore) -> Gpt:
    """Add the GPT in a .gpt file to the store (as `slug`, or the slug it was exported with). Every check of the
    archive passes before anything is written; a failure leaves the store as it was."""
    path = Path(path)
    if not path.is_file():
        raise GptsError(f"No such file: {path}.", "Pass the path of a .gpt file (made by `gpts export`).")
    if slug is not None:
        check_slug(slug)
    conn = connect()
    # Unpacked inside the store (never elsewhere, whatever the bundle holds), and gone when the import ends.
    with tempfile.TemporaryDirectory(prefix=".import-", dir=store_dir()) as tmp:
        data, members = read_bundle(path, Path(tmp) / "bundle")
        if not isinstance(data, dict):
            raise GptsError(f"{path} holds no GPT spec.", "Export the GPT again with `gpts export`.")
        if slug is not None:
            data["slug"] = slug
        files = []
        for name, extracted in members.items():
            kind, _, file_name = name.partition("/")
            if kind in ("knowledge", "evaluation"):
                files.append(FileSource(kind, file_name, extracted))
            elif kind != "adapter":
                raise GptsError(f"{path} holds {name!r}, which is not part of a GPT.",
                                "Export the GPT again with `gpts export`.")
        adapter_members = {n.partition("/")[2]: p for n, p in members.items() if n.startswith("adapter/")}
        if (data.get("model") == "adapter") != bool(adapter_members):
            raise GptsError(f"{path}: its spec and its adapter files disagree on whether the model is an adapter.",
                            "Export the GPT again with `gpts export`.")
        declared = {"knowledge": data.get("knowledge") or [], "evaluation": [data["evaluation"]]
                    if data.get("evaluation") else []}
        found = {kind: sorted(f.name for f in files if f.kind == kind) for kind in declared}
        if any(sorted(declared[k]) != found[k] for k in declared):
            raise GptsError(f"{path}: the spec lists files the archive does not hold (or the other way round).",
                            "Export the GPT again with `gpts export`.")
        data["knowledge"], data["evaluation"] = [], None  # they come in as `files`, already named
        spec = parse_spec(data, f" in {path}")
        check_free(conn, spec.slug)
        if adapter_members:  # kept only once everything else has passed
            spec = spec.model_copy(update={"model": str(_keep_adapter(adapter_members))})
        return create_gpt(spec, report=report, files=files, conn=conn)


def _keep_adapter(members: dict[str, Path]) -> Path:
    """An imported adapter's home in the store, named by its weights' hash (the same adapter is kept once)."""
    strange = sorted(set(members) - set(ADAPTER_FILES))
    if strange:
        raise GptsError(f"The bundle's adapter holds {strange[0]!r}, which is no part of an adapter.",
                        "Export the GPT again with `gpts export`.")
    weights = members.get("adapter.safetensors")
    if weights is None or "adapter_config.json" not in members:
        raise GptsError("The bundle's adapter is incomplete (adapter_config.json and adapter.safetensors are needed).",
                        "Export the GPT again with `gpts export`.")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    home = store_dir() / "adapters" / digest
    if not home.is_dir():
        home.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=home.parent))
        for name, extracted in members.items():
            shutil.copyfile(extracted, staging / name)
        staging.rename(home)
    return home


# -- from another gpts server ----------------------------------------------------------------------------------------

# A downloaded bundle may be as large as one gpts unpacks at most.
MAX_DOWNLOAD_BYTES = Limits().max_total_bytes
DOWNLOAD_TIMEOUT_S = 60.0  # for each connect and each read, not the whole download
_GPT_PATH = re.compile(r"/v1/gpts/[a-z0-9]+(-[a-z0-9]+)*/?$")  # after any prefix of a proxy
URL_FORM = "http://HOST:PORT/v1/gpts/SLUG (or its export URL, .../v1/gpts/SLUG/export)"


def is_url(source: str) -> bool:
    """A URL rather than a path (any scheme: one gpts cannot fetch is an error that says so)."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", source) is not None


def export_url(url: str) -> str:
    """The export endpoint of the GPT at `url`: its URL on a gpts server plus /export, or its export URL as given."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GptsError(f"{url} is not an http(s) URL of a GPT.", f"Give the GPT's URL on its server: {URL_FORM}.")
    if _GPT_PATH.search(parts.path):
        parts = parts._replace(path=parts.path.rstrip("/") + "/export")
    return urllib.parse.urlunsplit(parts)


def import_gpt_url(url: str, slug: str | None = None, api_key: str | None = None, report: Report = ignore,
                   max_bytes: int = MAX_DOWNLOAD_BYTES) -> Gpt:
    """Install a GPT from another gpts server (`gpts serve`): the bundle its export endpoint sends, with `api_key`
    as the bearer token, downloaded to a temporary file in the store and imported as a .gpt file is."""
    url = export_url(url)
    if slug is not None:
        check_slug(slug)  # before the download
    store_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=store_dir()) as tmp:
        path = Path(tmp) / "download.gpt"
        content_type = _download(url, path, api_key, max_bytes, report)
        if not is_bundle(path):
            raise GptsError(f"{url} sent no .gpt bundle (it sent {content_type or 'something else'}).",
                            f"Give a GPT's URL on a gpts server: {URL_FORM}.")
        with naming({path: url}):
            return import_gpt(path, slug, report)


def _download(url: str, out: Path, api_key: str | None, max_bytes: int, report: Report) -> str:
    """Stream `url` into `out`, at most `max_bytes`; returns the Content-Type the server gave."""
    request = urllib.request.Request(url, headers={"Accept": "application/zip"})
    if api_key:
        request.add_unredirected_header("Authorization", f"Bearer {api_key}")  # never sent on to another host
    host = urllib.parse.urlsplit(url).netloc
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response, out.open("wb") as f:
            declared = response.headers.get("Content-Length", "")
            total = int(declared) if declared.isdigit() else None
            if total is not None and total > max_bytes:
                raise _too_large(url, max_bytes)
            meter = Meter(report, f"Downloading from {host}", total, "bytes")
            while chunk := response.read(1024 * 1024):
                if meter.completed + len(chunk) > max_bytes:
                    raise _too_large(url, max_bytes)
                f.write(chunk)
                meter.advance(len(chunk))
            meter.done()
            return response.headers.get_content_type()
    except urllib.error.HTTPError as e:
        raise _refused(url, e, api_key) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise GptsError(f"Cannot download {url}: {reason}.",
                        f"Check the address, and that `gpts serve` runs on {host}, reachable from here.") from None


def _too_large(url: str, max_bytes: int) -> GptsError:
    return GptsError(f"{url} sends more than {max_bytes:,} bytes, more than any .gpt bundle gpts imports.",
                     f"Check the URL: {URL_FORM}.")


def _refused(url: str, e: urllib.error.HTTPError, api_key: str | None) -> GptsError:
    """The server's refusal, with its own words when it sent an OpenAI-shaped error."""
    try:
        message = json.loads(e.read())["error"]["message"]
    except (ValueError, KeyError, TypeError, OSError):
        message = e.reason
    if e.code == 401:
        problem = "refused the API key given" if api_key else "wants an API key"
        return GptsError(f"The server at {url} {problem} (401: {message}).",
                         "Pass the server's key with --api-key KEY, or set GPTS_API_KEY.")
    if e.code == 404:
        return NotFoundError(f"{url}: {message} (404).", f"Check the URL: {URL_FORM}. `curl "
                             f"{urllib.parse.urljoin(url, '/v1/gpts')}` lists the GPTs there.")
    return GptsError(f"{url} answered {e.code}: {message}.", "See the server's log for more.")


# -- Ollama --------------------------------------------------------------------------------------------------------


def is_bundle(path: Path) -> bool:
    """A .gpt bundle (a zip archive) rather than a text file such as an Ollama Modelfile."""
    import zipfile

    return zipfile.is_zipfile(path)


def import_modelfile(path: str | Path, slug: str | None = None, report: Report = ignore) -> Gpt:
    """A new GPT from an Ollama Modelfile: FROM is its model (a path is taken relative to the Modelfile), SYSTEM its
    instructions, PARAMETER its generation settings, MESSAGE pairs its examples. What gpts has no use for (TEMPLATE:
    gpts renders the model's own chat template) is reported as a warning."""
    from gpts.events import Message
    from gpts.fileio import read_text
    from gpts.modelfile import parse_modelfile

    path = Path(path)
    imported = parse_modelfile(read_text(path), str(path))
    for warning in imported.warnings:
        report(Message(warning, level="warning"))
    data = dict(imported.spec)
    model = data.get("model", "")
    if model.startswith((".", "/", "~")):
        data["model"] = str((path.parent / model).expanduser().resolve())
    if imported.adapter is not None:
        adapter = (path.parent / imported.adapter).expanduser()
        if _adapter_dir(str(adapter)) is None:
            raise GptsError(f"{path}: ADAPTER {imported.adapter} is not a gpts LoRA adapter directory.",
                            "gpts runs its own adapters (gpts finetune --method lora); merge a GGUF adapter into its "
                            "model with llama.cpp's export-lora and put that file in FROM.")
        data["model"] = str(adapter.resolve())
    if slug is not None:
        data["slug"] = slug
    return create_gpt(parse_spec(data, f" from {path}"), path.parent, report)


def export_ollama(slug: str, out_dir: str | Path, version: int | None = None, report: Report = ignore) -> Path:
    """A folder Ollama runs: the GPT's model as GGUF (an adapter merged into its base) and a Modelfile that names
    it (`ollama create SLUG -f OUT/Modelfile`). Knowledge files stay behind: Ollama has no retrieval."""
    from gpts.api import convert_model
    from gpts.events import Message
    from gpts.fileio import atomic_path
    from gpts.modelfile import to_modelfile

    gpt = get_gpt(slug, version)
    out_dir = Path(out_dir)
    check_writable(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise GptsError(f"{out_dir} is not empty.", "Choose a new folder for the Ollama export.")
    if gpt.knowledge:
        report(Message(f"Ollama has no retrieval: {slug}'s knowledge files ({len(gpt.knowledge)}) are left out.",
                       level="warning"))
    gguf_name = f"{slug}.gguf"
    modelfile = to_modelfile(gpt.spec, gguf_name)  # before the slow conversion: a text it cannot write fails first
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        convert_model(gpt.spec.model, "gguf", tmp / gguf_name, gguf_type="q8_0")
        (tmp / "Modelfile").write_text(modelfile)
    return out_dir
