"""Fetches one file of a lock, run as its own action:
    python -m tpbuild_triton.fetch --url URL --sha256 HEX --out out/FILE
Exit 0 fetched and verified, 1 the download failed or its bytes are not the locked ones.

A fetch is the only step of a locked env that needs the network. Its result is a blob named by content
like any other, so once a wheel is in the local or remote cache no machine downloads it again, and the
env build itself runs with no network. The bytes are checked against the lock's SHA-256 while they
stream: a file that differs (a republished wheel, a proxy's error page, a truncated transfer) is never
stored, and the message says which.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ATTEMPTS = 3
TIMEOUT = 60  # seconds without data before a transfer is given up


def fetch(url: str, sha256: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    problem = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(0.5 * 2 ** attempt)
        h = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
        except urllib.error.HTTPError as e:
            problem = f"HTTP {e.code} {e.reason}"
            if 400 <= e.code < 500 and e.code not in (408, 429):
                break  # the file is not there: asking again will not make it be
            continue
        except (OSError, urllib.error.URLError) as e:
            problem = str(getattr(e, "reason", e))
            continue
        if h.hexdigest() != sha256:
            tmp.unlink()
            raise SystemExit(f"error: {url} has SHA-256 {h.hexdigest()}, but the lock says {sha256}: the file on the "
                             "index is not the one that was locked (republished, or a proxy answered instead). "
                             "Nothing was stored. Find out why, then run `tpbuild lock` again if the new file is right")
        os.replace(tmp, out)
        return
    if tmp.exists():
        tmp.unlink()
    raise SystemExit(f"error: could not download {url} ({problem}) after {ATTEMPTS} attempts: a locked env fetches "
                     "each wheel once; check the network or the index (the wheel is not in the cache yet)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tpbuild_triton.fetch", description="Fetch one locked file.")
    ap.add_argument("--url", required=True)
    ap.add_argument("--sha256", required=True)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    fetch(args.url, args.sha256, args.out)
    print(f"fetched {args.url} (sha256 {args.sha256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
