import pytest


@pytest.fixture(autouse=True)
def gpts_home(tmp_path, monkeypatch):
    """Every test gets its own user directory: tests never read or write ~/.gpts."""
    home = tmp_path / "gpts-home"
    monkeypatch.setenv("GPTS_HOME", str(home))
    return home
