"""Knowledge files: text with locations from every format, the files a folder holds, and chunks cut at
boundaries that overlap, stay within their token budget and cover all the text."""

import io
import itertools
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpts.errors import GptsError
from gpts.knowledge import (MAX_FILE_BYTES, SUPPORTED_SUFFIXES, Chunk, Segment, check_file, chunk_segments, extract,
                            find_files)


def words(text: str) -> int:
    return len(text.split())


def chars(text: str) -> int:
    return len(text)


def make_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF written by hand: one Helvetica line per string, a page per list, a correct xref."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
                   b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(len(pages))), len(pages)),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i, lines in enumerate(pages):
        shown = b" T* ".join(b"(%s) Tj" % line.encode("latin-1") for line in lines)
        content = b"BT /F1 12 Tf 14 TL 72 720 Td " + shown + b" ET" if lines else b""
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i))
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
    pdf = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(pdf)
    pdf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    pdf += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    pdf += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(pdf)


def encrypted(pdf: bytes, user_password: str, owner_password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password, owner_password, algorithm="RC4-128")  # RC4 needs no optional package
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def raises(match: str):
    return pytest.raises(GptsError, match=match)


# -- formats ----------------------------------------------------------------------------------------------------


def test_importing_loads_no_heavy_package():
    heavy = {"torch", "numpy", "pypdf", "bs4", "tokenizers"}
    code = f"import sys, gpts.knowledge; print(sorted({heavy!r} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_text_paragraphs_keep_their_first_line_and_indentation(tmp_path):
    path = tmp_path / "notes.md"
    path.write_bytes(b"# Title\r\n\r\nFirst line\r\nsecond line\r\n\n  \n\tdef f():\n\t    return 1\n")
    assert extract(path) == [Segment("# Title", None, 1), Segment("First line\nsecond line", None, 3),
                             Segment("\tdef f():\n\t    return 1", None, 7)]


def test_code_and_upper_case_suffixes_are_read(tmp_path):
    path = tmp_path / "Main.PY"
    path.write_text("\ufeffimport os\n")  # a byte-order mark is no text
    assert extract(path) == [Segment("import os", None, 1)]
    assert {".py", ".js", ".ts", ".go", ".rs", ".sql", ".yaml", ".toml", ".css", ".pdf", ".tsv"} <= SUPPORTED_SUFFIXES


def test_html_drops_scripts_styles_and_navigation_and_keeps_block_lines(tmp_path):
    path = tmp_path / "page.html"
    path.write_text("""<!DOCTYPE html>
<html><head><title>Handbook</title>
<style>p { color: red }</style></head>
<body><nav><a href="/">Home</a> menu</nav>
<script>
var secret = "tracking";
</script>
<h1>Leave policy</h1>
<p>Staff get <b>25 days</b>
   of leave.<br>Ask your manager.</p>
<!-- a comment -->
<ul><li>One</li><li>Two</li></ul>
<table><tr><th>Name</th><th>Days</th></tr></table>
<pre>  indented
    code</pre>
</body></html>""")
    assert extract(path) == [
        Segment("Handbook", None, 2), Segment("Leave policy", None, 8),
        Segment("Staff get 25 days of leave.\nAsk your manager.", None, 9), Segment("One", None, 12),
        Segment("Two", None, 12), Segment("Name | Days", None, 13), Segment("  indented\n    code", None, 14)]


def test_pdf_pages_survive_into_chunks(tmp_path):
    path = tmp_path / "manual.pdf"
    pages = [[f"Page {p} sentence {s} about the manual." for s in range(1, 4)] for p in (1, 2, 3)]
    path.write_bytes(make_pdf(pages))
    segments = extract(path)
    assert [s.page for s in segments] == [1, 2, 3] and all(s.line is None for s in segments)
    assert segments[1].text.split("\n") == pages[1]  # pypdf reads back what was written
    # Each page (18 words) is cut into its sentences (6 words), two to a chunk: the second chunk crosses a page.
    chunks = chunk_segments(segments, words, chunk_tokens=16, overlap_tokens=0)
    assert [c.pages for c in chunks] == [(1, 1), (1, 2), (2, 2), (3, 3), (3, 3)]
    assert all(c.lines is None for c in chunks)
    for chunk in chunks:
        for page in range(chunk.pages[0], chunk.pages[1] + 1):
            assert f"Page {page}" in chunk.text


def test_csv_rows_name_their_columns_and_lines(tmp_path):
    path = tmp_path / "staff.csv"
    path.write_text('name,role,\n\nAda,"Chief\nEngineer",x\nBob,,y,extra\n')
    assert extract(path) == [Segment("name: Ada; role: Chief Engineer; column 3: x", None, 3),
                             Segment("name: Bob; column 3: y; column 4: extra", None, 5)]
    tsv = tmp_path / "staff.tsv"
    tsv.write_text("name\trole\nAda\tEngineer, chief\n")
    assert extract(tsv) == [Segment("name: Ada; role: Engineer, chief", None, 2)]


def test_json_is_pretty_printed_and_jsonl_records_keep_their_lines(tmp_path):
    path = tmp_path / "faq.json"
    path.write_text('{"q": "Opening hours?", "a": ["9\u201317", "Mon\u2013Fri"]}')
    [segment] = extract(path)
    assert segment == Segment('{\n  "q": "Opening hours?",\n  "a": [\n    "9\u201317",\n    "Mon\u2013Fri"\n  ]\n}',
                              None, None)  # dashes as they are, not \u escapes
    lines = tmp_path / "faq.jsonl"
    lines.write_text('{"q": "a"}\n\n{"q": "b"}\n')
    assert extract(lines) == [Segment('{"q": "a"}', None, 1), Segment('{"q": "b"}', None, 3)]


# -- errors ---------------------------------------------------------------------------------------------------


def test_check_file_rejects_what_cannot_be_knowledge(tmp_path):
    with raises(f"No such file: {tmp_path / 'gone.md'}"):
        check_file(tmp_path / "gone.md")
    with raises("is a folder"):
        check_file(tmp_path)
    (tmp_path / "slides.pptx").write_bytes(b"PK")
    with raises(r"slides\.pptx: gpts cannot read \.pptx files") as error:
        check_file(tmp_path / "slides.pptx")
    assert ".pdf" in error.value.fix and ".md" in error.value.fix
    (tmp_path / "empty.md").write_bytes(b"")
    with raises(r"empty\.md is empty"):
        check_file(tmp_path / "empty.md")
    (tmp_path / "big.txt").write_text("x" * 2000)
    with raises(r"big\.txt is 2,000 bytes, over the limit of 1,000 bytes") as error:
        check_file(tmp_path / "big.txt", max_bytes=1000)
    assert "max_file_mb" in error.value.fix
    check_file(tmp_path / "big.txt", max_bytes=2000)
    assert MAX_FILE_BYTES == 512 * 2**20


def test_wide_and_non_utf8_text_say_how_to_convert(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("Hello there", encoding="utf-16")
    with raises(r"notes\.txt is UTF-16 text") as error:
        extract(path)
    assert "iconv" in error.value.fix
    path.write_bytes("caf\u00e9".encode("cp1252"))
    with raises("not UTF-8"):
        extract(path)


def test_files_without_text_are_errors(tmp_path):
    blank = tmp_path / "blank.md"
    blank.write_text("  \n\n\t\n")
    with raises(r"No text found in .*blank\.md"):
        extract(blank)
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(make_pdf([[], []]))
    with raises(r"No text found in .*scan\.pdf") as error:
        extract(scan)
    assert "OCR" in error.value.fix
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b\n")
    with raises("No text found"):
        extract(header_only)


def test_locked_and_broken_pdfs_are_errors_naming_them(tmp_path):
    pdf = make_pdf([["Secret plans."]])
    locked = tmp_path / "locked.pdf"
    locked.write_bytes(encrypted(pdf, "secret", "owner"))
    with raises(r"locked\.pdf is encrypted"):
        extract(locked)
    restricted = tmp_path / "restricted.pdf"  # an owner password only: anyone may read it
    restricted.write_bytes(encrypted(pdf, "", "owner"))
    assert extract(restricted) == [Segment("Secret plans.", 1, None)]
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nthis is not really a PDF\n")
    with raises(r"Cannot read .*broken\.pdf as a PDF"):
        extract(broken)


def test_malformed_json_and_jsonl_name_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "a": 1,\n}')
    with raises(r"bad\.json is not valid JSON: .* line 3"):
        extract(path)
    lines = tmp_path / "bad.jsonl"
    lines.write_text('{"a": 1}\n{"a": \n')
    with raises(r"bad\.jsonl, line 2: "):
        extract(lines)


# -- finding files ----------------------------------------------------------------------------------------------


def test_folders_give_their_supported_files_in_order(tmp_path):
    docs = tmp_path / "docs"
    for name in ("b.md", "a.txt", "sub/c.py", "sub/deeper/d.csv", ".hidden/x.md", ".secret.md", "image.png"):
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text("text\n")
    (docs / "sub" / "__init__.py").write_bytes(b"")  # empty: nothing to index, and no reason to stop
    expected = [docs / "a.txt", docs / "b.md", docs / "sub" / "c.py", docs / "sub" / "deeper" / "d.csv"]
    assert find_files([docs]) == expected
    assert find_files([docs / "b.md", docs]) == [docs / "b.md", *expected[:1], *expected[2:]]  # each once
    with raises(r"image\.png: gpts cannot read \.png"):
        find_files([docs / "image.png"])
    with raises(r"a\.txt is 5 bytes, over the limit"):
        find_files([docs], max_bytes=4)
    with raises("No such file"):
        find_files([tmp_path / "missing"])


# -- chunks -----------------------------------------------------------------------------------------------------


def test_chunk_sizes_are_validated():
    segments = [Segment("text", None, 1)]
    for chunk_tokens, overlap_tokens in ((15, 0), (100, 51), (100, -1)):
        with raises(f"chunks of {chunk_tokens} tokens overlapping by {overlap_tokens}"):
            chunk_segments(segments, words, chunk_tokens, overlap_tokens)
    assert len(chunk_segments(segments, words, 16, 8)) == 1
    assert chunk_segments([], words) == [] and chunk_segments([Segment(" \n", None, 1)], words) == []


def test_chinese_is_cut_at_sentence_ends():
    sentences = [f"这是第{i}个句子，它讲的是知识库里的一件事。" for i in range(30)]
    chunks = chunk_segments([Segment("".join(sentences), None, 1)], chars, chunk_tokens=64, overlap_tokens=20)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.tokens == len(chunk.text) <= 64 and chunk.text.endswith("。")
        assert chunk.text.startswith("这是第")  # starts at a sentence too
    assert {s for s in sentences if any(s in c.text for c in chunks)} == set(sentences)


def test_text_without_any_break_is_cut_into_pieces_that_fit():
    text = "x" * 1000
    chunks = chunk_segments([Segment(text, None, 4)], chars, chunk_tokens=100, overlap_tokens=0)
    assert [c.tokens for c in chunks] == [100] * 10 and "".join(c.text for c in chunks) == text
    assert all(c.lines == (4, 4) for c in chunks)


def test_long_code_is_cut_at_line_breaks_with_its_lines():
    code = "\n".join(f"value_{i} = compute({i})" for i in range(100))  # one paragraph, no sentences
    chunks = chunk_segments([Segment(code, None, 10)], chars, chunk_tokens=200, overlap_tokens=0)
    for chunk in chunks:
        first, last = chunk.lines
        assert chunk.text == "\n".join(f"value_{i} = compute({i})" for i in range(first - 10, last - 10 + 1))


def test_sentences_of_a_wrapped_paragraph_get_their_own_lines():
    paragraph = "One two three.\nFour five\nsix. Seven eight nine ten eleven.\nTwelve."
    chunks = chunk_segments([Segment("Intro.", None, 1), Segment(paragraph, None, 3)], words, 16, 0)
    assert len(chunks) == 1 and chunks[0].lines == (1, 6)
    # 19 words: cut into sentences of 7 (line 3), 5 (lines 4-5), 5 (line 5) and 2 (line 6) words.
    paragraph = ("One two three four five six seven.\nEight nine ten\neleven twelve. Thirteen fourteen fifteen "
                 "sixteen seventeen.\nEighteen nineteen.")
    chunks = chunk_segments([Segment(paragraph, None, 3)], words, 16, 0)
    assert [(c.text.split()[0], c.lines) for c in chunks] == [("One", (3, 5)), ("Thirteen", (5, 6))]


def test_the_next_chunk_starts_with_the_tail_of_the_one_before():
    paragraphs = [Segment(f"Paragraph {i} has five words.", None, 2 * i + 1) for i in range(20)]
    chunks = chunk_segments(paragraphs, words, chunk_tokens=20, overlap_tokens=10)
    assert [c.text.count("Paragraph") for c in chunks] == [4] * 9  # paragraphs 0-3, 2-5, ..., 16-19
    for before, after in itertools.pairwise(chunks):
        shared = after.text.split("\n\n")[:2]
        assert before.text.split("\n\n")[-2:] == shared and after.lines[0] == before.lines[1] - 2
    no_overlap = chunk_segments(paragraphs, words, chunk_tokens=20, overlap_tokens=0)
    assert "\n\n".join(c.text for c in no_overlap) == "\n\n".join(p.text for p in paragraphs)


def test_the_overlap_leaves_room_for_the_next_unit():
    segments = [Segment("a b c d", None, 1), Segment("e f g h", None, 2), Segment("i j k l", None, 3),
                Segment("m n o p q r s t u v w x y z", None, 4)]
    # "i j k l" would be overlap enough (4 <= 8), but with the 14 words after it the chunk would hold 18.
    chunks = chunk_segments(segments, words, chunk_tokens=16, overlap_tokens=8)
    assert [c.text.split("\n\n") for c in chunks] == [[s.text for s in segments[:3]], [segments[3].text]]
    whole = chunk_segments([Segment("a " * 16, None, 1), Segment("b " * 16, None, 2)], words, 16, 8)
    assert [c.tokens for c in whole] == [16, 16]  # a chunk of one unit passes none of it on


def test_a_real_tokenizer_counts_the_chunks():
    from gpts.tokenizer import Tokenizer

    sentences = [f"Rule {i}: visitors sign in at the front desk and wear a badge at all times." for i in range(60)]
    paragraphs = [" ".join(sentences[i:i + 6]) for i in range(0, 60, 6)]
    tok = Tokenizer.train_bpe(paragraphs, vocab_size=300)

    def count(text: str) -> int:
        return len(tok.encode(text, add_special=False))

    chunks = chunk_segments([Segment(p, None, 2 * i + 1) for i, p in enumerate(paragraphs)], count,
                            chunk_tokens=120, overlap_tokens=40)
    assert len(chunks) > 5 and [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.tokens == count(chunk.text) <= 120
    for before, after in itertools.pairwise(chunks):
        assert after.text[:40] in before.text  # the overlap
    assert all(any(s in c.text for c in chunks) for s in sentences)


@st.composite
def documents(draw):
    """Paragraphs of sentences of unique words ("w17"), wrapped onto lines, with the line of every word."""
    segments, line_of, n, line = [], {}, 0, 1
    for sentence_lengths in draw(st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=5), min_size=1,
                                          max_size=8)):
        first, lines, current = line, [], []
        for length in sentence_lengths:
            for i in range(length):
                word = f"w{n}" + ("." if i == length - 1 else "")
                n += 1
                current.append(word)
                line_of[word.rstrip(".")] = line
                if len(current) == draw(st.integers(3, 12)):
                    lines.append(" ".join(current))
                    current, line = [], line + 1
        if current:
            lines.append(" ".join(current))
            line += 1
        segments.append(Segment("\n".join(lines), None, first))
        line += draw(st.integers(1, 3))  # blank lines between paragraphs
    return segments, line_of


@settings(max_examples=60, deadline=None)
@given(documents(), st.integers(16, 60), st.floats(0, 0.5))
def test_chunks_fit_overlap_and_cover_everything(document, chunk_tokens, overlap_share):
    segments, line_of = document
    overlap_tokens = int(chunk_tokens * overlap_share)
    chunks = chunk_segments(segments, words, chunk_tokens, overlap_tokens)
    covered: list[str] = []
    for chunk in chunks:
        assert isinstance(chunk, Chunk) and chunk.tokens == words(chunk.text) <= chunk_tokens
        chunk_words = [w.rstrip(".") for w in chunk.text.split()]
        assert chunk.lines == (min(line_of[w] for w in chunk_words), max(line_of[w] for w in chunk_words))
        shared = len(covered) - covered.index(chunk_words[0]) if chunk_words[0] in covered else 0
        assert covered[len(covered) - shared:] == chunk_words[:shared]  # it starts with the tail of the last one
        assert shared <= overlap_tokens and shared < len(chunk_words)
        covered += chunk_words[shared:]
    assert covered == [w.rstrip(".") for s in segments for w in s.text.split()]
