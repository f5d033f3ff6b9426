"""The GPTs that ship with gpts (src/gpts/ready/), each showing one thing a GPT can do, installed into a user's
store the first time the CLI opens it:

    french-translator   instructions: translate, and nothing else
    review-sentiment    examples: a classifier taught by four labeled conversations
    gpts-tutor          knowledge: answers from gpts' own guide, citing it
    story-starter       conversation starters and a template variable

A user may edit or remove them; they are installed once and never again.
"""

from __future__ import annotations

from pathlib import Path

from gpts.errors import GptsError
from gpts.events import Message, Report, ignore
from gpts.spec import read_spec
from gpts.store.catalogue import create_gpt, set_featured
from gpts.store.db import connect, transaction

READY_DIR = Path(__file__).resolve().parents[1] / "ready"
INSTALLED_KEY = "ready_gpts_installed"


def install_ready_gpts(report: Report = ignore) -> list[str]:
    """Install the ready GPTs unless this store has had them once; returns the slugs installed now."""
    conn = connect()
    if conn.execute("SELECT 1 FROM settings WHERE key = ?", (INSTALLED_KEY,)).fetchone():
        return []
    installed = []
    for path in sorted(READY_DIR.glob("*.yaml")):
        spec, base_dir = read_spec(path)
        if conn.execute("SELECT 1 FROM gpts WHERE slug = ?", (spec.slug,)).fetchone():
            continue  # the user's own GPT of that name wins, or another process installed it meanwhile
        try:
            create_gpt(spec, base_dir, builtin=True, conn=conn)
        except GptsError:
            if conn.execute("SELECT 1 FROM gpts WHERE slug = ?", (spec.slug,)).fetchone():
                continue  # another process's first use, at the same time
            raise
        set_featured(spec.slug, conn=conn)
        installed.append(spec.slug)
    with transaction(conn):
        conn.execute("INSERT OR IGNORE INTO settings (key, value) VALUES (?, '1')", (INSTALLED_KEY,))
    if installed:
        report(Message(f"Installed the GPTs that ship with gpts: {', '.join(installed)}."))
    return installed
