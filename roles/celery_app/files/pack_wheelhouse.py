"""Pack a wheelhouse directory into a reproducible tar (runs on the Ansible controller).

Same files in, same bytes out: names sorted, times, owners and modes normalised, no
compression (wheels are already compressed). The copy module then compares one checksum
instead of one file at a time. It prints the archive's SHA-1, which the role compares with the
host's copy before it copies anything.
"""

import hashlib
import os
import sys
import tarfile
from pathlib import Path


def main(source: str, target: str) -> None:
    root = Path(source)
    partial = f"{target}.{os.getpid()}.partial"
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = archive.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
            info.mode = 0o644
            info.pax_headers = {}
            with path.open("rb") as handle:
                archive.addfile(info, handle)
    digest = hashlib.sha1(usedforsecurity=False)
    with open(partial, "rb") as packed:
        for block in iter(lambda: packed.read(1 << 20), b""):
            digest.update(block)
    os.replace(partial, target)  # concurrent runs never read a half-written archive
    print(digest.hexdigest())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
