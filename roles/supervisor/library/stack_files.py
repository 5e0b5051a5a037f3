#!/usr/bin/python3
"""Directories, files with their content, absent and pruned paths of a host, in one module run.

Written here because Ansible has no module that takes a list: ``template`` and ``copy`` cost
five round trips per file even when it is unchanged (the remote home, a temporary directory,
``stat``, ``file``, the cleanup), which made a third of an idempotent ``site.yml`` run.
A task renders the contents on the controller (``lookup('ansible.builtin.template', ...)``)
and hands this module every file of one concern at once. It keeps what ``template`` promises:
a file is replaced atomically (written beside it with its owner and mode already set, checked
by ``validate``, renamed over it), check mode changes nothing, and ``--diff`` shows each change
(the content hidden where ``show_content`` is false: secrets).
"""

from __future__ import annotations

import fnmatch
import grp
import os
import pwd
import re
import shutil
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: stack_files
short_description: Directories, files and absent paths of one concern, in one module run
description:
  - Creates the directories, then writes the files, then removes the absent paths, then prunes,
    in that order, each with its owner, group and mode. A file changes only when its content or its
    attributes differ; it is replaced atomically, after C(validate) accepted the new content.
options:
  directories:
    description: Directories to create (with their parents) and give these attributes.
    type: list
    elements: dict
    default: []
  files:
    description:
      - Files with their whole content. Keys C(dest), C(content) (required), C(owner),
        C(group), C(mode) (an octal string), C(validate) (a command with C(%s) for the new
        file; it must exit 0), C(force) (false: written only where no file exists yet, an
        existing one is left as it is, content and attributes), C(show_content) (this file's
        own, over the module's).
    type: list
    elements: dict
    default: []
  absent:
    description: Paths to remove (files, links or directories with what they hold).
    type: list
    elements: path
    default: []
  prune:
    description:
      - Files a set owns in a directory, removed unless this call writes them. Keys C(path)
        (the directory, not searched recursively), C(patterns) (shell globs of the names),
        C(contains) (a regular expression one of the file's lines must match).
    type: list
    elements: dict
    default: []
  show_content:
    description: Show the contents in the diff; false for secrets.
    type: bool
    default: true
"""

RETURN = r"""
changed_paths:
  description: The paths created, rewritten, given new attributes or removed.
  type: list
  elements: str
  returned: always
"""

_DIFF_LIMIT = 64 * 1024


class Changes:
    """What a run changed (or would change, in check mode): the paths and their diffs."""

    def __init__(self, show_content: bool) -> None:
        self.show_content = show_content
        self.paths: list[str] = []
        self.diffs: list[dict] = []

    def content_of(self, spec: dict, data: bytes | None) -> str:
        """``content`` under the file's own ``show_content``, when it has one."""
        shown = spec.get("show_content")
        if shown is None or bool(shown) == self.show_content:
            return self.content(data)
        saved, self.show_content = self.show_content, bool(shown)
        try:
            return self.content(data)
        finally:
            self.show_content = saved

    def note(self, path: str, before: str, after: str) -> None:
        self.paths.append(path)
        self.diffs.append({"before_header": path, "after_header": path,
                           "before": before, "after": after})  # fmt: skip

    def content(self, data: bytes | None) -> str:
        if data is None:
            return ""
        if not self.show_content:
            return "(content hidden)\n"
        if len(data) > _DIFF_LIMIT or b"\0" in data:
            return f"({len(data)} bytes, not shown)\n"
        return data.decode("utf-8", errors="replace")


#: The id of a user or group that does not exist yet, in check mode (an earlier task of the
#: real run would create it): the attributes count as different.
_NOT_YET = -2


def _ids(module: AnsibleModule, spec: dict, path: str) -> tuple[int, int]:
    """The uid and gid ``spec`` asks for (-1 where it leaves one as it is)."""
    ids = []
    for key, lookup in (("owner", lambda name: pwd.getpwnam(name).pw_uid),
                        ("group", lambda name: grp.getgrnam(name).gr_gid)):  # fmt: skip
        name = spec.get(key)
        if name is None:
            ids.append(-1)
            continue
        try:
            ids.append(lookup(str(name)))
        except KeyError:
            if not module.check_mode:
                module.fail_json(msg=f"{path}: no such {'user' if key == 'owner' else 'group'} "
                                     f"{name!r}")  # fmt: skip
            module.warn(f"{path}: no {key} {name!r} yet (check mode: a real run creates it first)")
            ids.append(_NOT_YET)
    return ids[0], ids[1]


def _mode(module: AnsibleModule, spec: dict, path: str) -> int | None:
    mode = spec.get("mode")
    if mode is None or isinstance(mode, int):  # an unquoted YAML 0644 arrives as 420
        return mode
    try:
        return int(str(mode), 8)
    except ValueError:
        module.fail_json(msg=f"{path}: mode {mode!r} is not an octal string such as '0644'")
    return None


def _attributes(info: os.stat_result) -> str:
    owner = pwd.getpwuid(info.st_uid).pw_name if _known_uid(info.st_uid) else str(info.st_uid)
    group = grp.getgrgid(info.st_gid).gr_name if _known_gid(info.st_gid) else str(info.st_gid)
    return f"owner {owner}, group {group}, mode {stat.S_IMODE(info.st_mode):04o}\n"


def _known_uid(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _known_gid(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
    except KeyError:
        return False
    return True


def _attributes_differ(info: os.stat_result, uid: int, gid: int, mode: int | None) -> bool:
    return (
        _NOT_YET in (uid, gid)
        or uid not in (-1, info.st_uid)
        or gid not in (-1, info.st_gid)
        or (mode is not None and stat.S_IMODE(info.st_mode) != mode)
    )


def _set_attributes(path: str, uid: int, gid: int, mode: int | None) -> None:
    if uid != -1 or gid != -1:
        os.chown(path, uid, gid, follow_symlinks=False)
    if mode is not None:
        os.chmod(path, mode)


def _fix_attributes(module: AnsibleModule, path: str, wanted: tuple[int, int, int | None],
                    changes: Changes) -> None:  # fmt: skip
    """Give ``path`` the owner, group and mode asked for, noting the change."""
    uid, gid, mode = wanted
    info = os.stat(path)
    if not _attributes_differ(info, uid, gid, mode):
        return
    before = _attributes(info)
    if not module.check_mode:
        _set_attributes(path, uid, gid, mode)
        changes.note(path, before, _attributes(os.stat(path)))
    else:
        changes.note(path, before, "(other attributes)\n")


def _directory(module: AnsibleModule, spec: dict, changes: Changes) -> None:
    path = spec.get("path")
    if not path:
        module.fail_json(msg=f"a directory without a path: {spec}")
    uid, gid = _ids(module, spec, path)
    mode = _mode(module, spec, path)
    if os.path.lexists(path) and not os.path.isdir(path):
        module.fail_json(msg=f"{path} exists and is not a directory")
    if os.path.isdir(path):
        _fix_attributes(module, path, (uid, gid, mode), changes)
        return
    changes.note(path, "(absent)\n", "(directory)\n")
    if not module.check_mode:
        os.makedirs(path)
        _set_attributes(path, uid, gid, mode)


def _file(module: AnsibleModule, spec: dict, changes: Changes) -> None:
    dest = spec.get("dest")
    content = spec.get("content")
    if not dest or not isinstance(content, str):
        module.fail_json(msg=f"a file needs dest and content (a string): {dest or spec}")
    uid, gid = _ids(module, spec, dest)
    mode = _mode(module, spec, dest)
    data = content.encode("utf-8")
    before: bytes | None = None
    if os.path.isdir(dest) and not os.path.islink(dest):
        module.fail_json(msg=f"{dest} is a directory")
    if not module.boolean(spec.get("force", True)) and os.path.lexists(dest):
        return
    if os.path.isfile(dest) and not os.path.islink(dest):
        with open(dest, "rb") as current:
            before = current.read()
        if before == data:
            _fix_attributes(module, dest, (uid, gid, mode), changes)
            return
    changes.note(dest, changes.content_of(spec, before), changes.content_of(spec, data))
    if not module.check_mode:
        _replace(module, dest, data, (uid, gid, mode), before is not None, spec.get("validate"))


def _replace(module: AnsibleModule, dest: str, data: bytes, attributes: tuple[int, int, int | None],
             existed: bool, validate: object) -> None:  # fmt: skip
    """Write ``data`` beside ``dest`` with its attributes set, validate it, rename it over."""
    uid, gid, mode = attributes
    directory = os.path.dirname(dest) or "."
    if not os.path.isdir(directory):
        module.fail_json(msg=f"{dest}: its directory {directory} does not exist")
    # What the task leaves unset stays as the file had it (as ``template`` keeps it).
    if existed:
        current = os.stat(dest)
        uid = current.st_uid if uid == -1 else uid
        gid = current.st_gid if gid == -1 else gid
        mode = stat.S_IMODE(current.st_mode) if mode is None else mode
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(dest)}.")
    try:
        with os.fdopen(handle, "wb") as new:
            new.write(data)
        # The new file has its owner and mode before it takes the name: a secret is never
        # readable by others, not even for a moment.
        os.chmod(temporary, 0o644 if mode is None else mode)
        _set_attributes(temporary, uid, gid, None)
        if validate:
            command = str(validate)
            if "%s" not in command:
                module.fail_json(msg=f"{dest}: validate must contain %s: {command}")
            rc, out, err = module.run_command(command % temporary)
            if rc != 0:
                module.fail_json(msg=f"{dest}: failed to validate", rc=rc, stdout=out,
                                 stderr=err)  # fmt: skip
        os.replace(temporary, dest)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def _absent(module: AnsibleModule, path: str, changes: Changes) -> None:
    if not os.path.lexists(path):
        return
    directory = os.path.isdir(path) and not os.path.islink(path)
    changes.note(path, "(directory)\n" if directory else "(present)\n", "(absent)\n")
    if module.check_mode:
        return
    if directory:
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _prune(module: AnsibleModule, spec: dict, kept: set[str], changes: Changes) -> None:
    """Remove the files of ``spec["path"]`` that match a pattern and ``contains``, except
    ``kept``."""
    directory = spec.get("path")
    patterns = spec.get("patterns") or ["*"]
    if isinstance(patterns, str):
        patterns = [patterns]
    try:
        marker = re.compile(str(spec.get("contains") or ""), re.MULTILINE)
    except re.error as bad:
        module.fail_json(msg=f"prune {directory}: contains is not a regular expression: {bad}")
    if not directory or not os.path.isdir(directory):
        return
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.normpath(path) in kept or not os.path.isfile(path) or os.path.islink(path):
            continue
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            continue
        with open(path, "rb") as candidate:
            text = candidate.read().decode("utf-8", errors="replace")
        if marker.search(text):
            _absent(module, path, changes)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "directories": {"type": "list", "elements": "dict", "default": []},
            "files": {"type": "list", "elements": "dict", "default": []},
            "absent": {"type": "list", "elements": "path", "default": []},
            "prune": {"type": "list", "elements": "dict", "default": []},
            "show_content": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    changes = Changes(module.params["show_content"])
    for spec in module.params["directories"]:
        _directory(module, spec, changes)
    for spec in module.params["files"]:
        _file(module, spec, changes)
    for path in module.params["absent"]:
        _absent(module, path, changes)
    kept = {os.path.normpath(str(spec.get("dest"))) for spec in module.params["files"]}
    for spec in module.params["prune"]:
        _prune(module, spec, kept, changes)
    module.exit_json(changed=bool(changes.paths), changed_paths=changes.paths, diff=changes.diffs)


if __name__ == "__main__":
    main()
