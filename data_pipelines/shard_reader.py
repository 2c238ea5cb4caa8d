"""Reading webdataset tar shards into samples, with every loss counted by reason.

A sample is the group of consecutive tar members sharing a key (``k.mp4``, ``k.json``, ``k.txt`` ->
``{"__key__": "k", "__url__": url, "mp4": ..., "json": ..., "txt": ...}``), as in webdataset.

webdataset's reader (Python's ``tarfile`` underneath) takes a corrupt header block after the first member for
the end of the archive: the rest of the shard vanished and nothing was counted. Here the stream is read with
``ignore_zeros``, so a bad header block is stepped over and reading resumes at the next valid header; every
loss is reported through ``on_skip(reason, where, message)``:

- ``shard_error``: the shard cannot be opened, holds no tar header at all, or its ``pipe:`` command failed.
- ``corrupt_tar``: a sample next to a damaged stretch of the archive that lacks members the shard's intact
  samples have (the member whose header was lost): dropped, never used incomplete. A damaged stretch that
  touched no recognisable sample (whole samples may have been inside it, their keys are lost) counts once.
- ``truncated_tar``: the shard ends inside a member or a header, or without tar's end-of-archive blocks; the
  last sample is dropped when it lacks members, else the shard counts once (later samples may be lost).
- ``duplicate_member``: a sample with two members of the same extension (both copies are dropped).

A damaged sample is judged against the extension set of the shard's last intact sample; damaged samples met
before any intact one wait for it (and are dropped if the shard has none).
"""

from __future__ import annotations

import glob
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO

import webdataset as wds

SkipFn = Callable[[str, str, str], None]  # (reason, where: url or url:key, message)

_META = re.compile(r"__[^/]*__($|/)")  # webdataset's metadata members (``__key__`` files etc.), not data
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # "dir/key.ext.more" -> ("dir/key", "ext.more")


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Brace patterns (``shard-{000000..000009}.tar``), local globs (``shards/*.tar``, sorted), ``::``-joined
    lists, ``pipe:`` commands, lists."""
    given = [urls] if isinstance(urls, str) else [str(u) for u in urls]
    out = []
    for url in given:
        for u in wds.shardlists.expand_urls(url):
            local_glob = not u.startswith(("pipe:", "http://", "https://", "s3://", "gs://")) and any(
                c in u for c in "*?["
            )
            out.extend(sorted(glob.glob(u)) if local_glob else [u])
    if not out:
        raise ValueError(f"urls: no shards in {urls!r}")
    return out


class _Damage:
    """What the header reader met since the last valid header: bad blocks, zero blocks, a cut-off block."""

    def __init__(self) -> None:
        self.bad_blocks = 0
        self.bad_offset = -1
        self.zero_blocks = 0
        self.truncated = False


class _WatchedHeader(tarfile.TarInfo):
    """A TarInfo whose header parsing tells the reading :class:`_TarReader` what it had to step over."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        damage: _Damage = tarfile_.damage  # type: ignore[attr-defined]
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.InvalidHeaderError:
            if not damage.bad_blocks:
                damage.bad_offset = tarfile_.offset
            damage.bad_blocks += 1
            raise
        except tarfile.EOFHeaderError:
            damage.zero_blocks += 1
            raise
        except tarfile.TruncatedHeaderError:
            damage.truncated = True
            raise


class _TarReader(tarfile.TarFile):
    """A streaming TarFile that steps over bad header blocks (``ignore_zeros``) and records them."""

    tarinfo = _WatchedHeader

    def __init__(self, *args, **kwargs) -> None:
        self.damage = _Damage()  # before TarFile.__init__, which already reads the first header
        super().__init__(*args, **kwargs)


def _members(fileobj: IO[bytes], url: str, on_skip: SkipFn) -> Iterator[tuple]:
    """``("member", key, ext, data)`` per data member, ``("damage", reason, detail)`` where the archive is
    damaged (bad header blocks stepped over, or its end cut off)."""
    try:
        tar = _TarReader.open(fileobj=fileobj, mode="r|*", ignore_zeros=True)
    except tarfile.TarError as exc:
        on_skip("shard_error", url, f"not a tar archive: {exc}")
        return
    damage = tar.damage
    if tar.firstmember is None:  # TarFile.__init__ found no valid header in the whole stream
        if damage.bad_blocks or damage.truncated:
            message = f"no valid tar header in {damage.bad_blocks} blocks: not a tar archive"
            on_skip("shard_error", url, message)
        return  # else an empty archive: nothing in it, nothing lost
    while True:
        try:
            info = tar.next()
        except tarfile.TarError as exc:  # "unexpected end of data" seeking past a member, a bad pax header
            yield "damage", "truncated_tar", f"the shard ends early ({exc})"
            return
        tar.members = []  # streaming: keep no TarInfo list
        if info is None:
            break
        if damage.bad_blocks:
            where = f"{damage.bad_blocks} bad header blocks at byte {damage.bad_offset}"
            yield "damage", "corrupt_tar", where
        damage.bad_blocks, damage.zero_blocks = 0, 0
        m = _KEY_EXT.match(info.name)
        if not info.isreg() or _META.match(info.name) or m is None:  # not part of a sample
            continue
        try:
            data = tar.extractfile(info).read()
        except tarfile.TarError as exc:
            yield "damage", "truncated_tar", f"the shard ends inside {info.name} ({exc})"
            return
        yield "member", m.group(1), m.group(2).lower(), data
    if damage.bad_blocks:
        detail = f"{damage.bad_blocks} bad blocks from byte {damage.bad_offset} to the end"
        yield "damage", "corrupt_tar", detail
    elif damage.truncated or not damage.zero_blocks:
        yield "damage", "truncated_tar", "the shard ends without tar's end-of-archive blocks"


def read_shard(url: str, on_skip: SkipFn) -> Iterator[dict]:
    """The samples of one shard (a path or any webdataset url: ``pipe:``, ``http(s)://``); losses go to
    ``on_skip`` (see the module docstring), nothing is raised for bad data."""
    try:
        stream = wds.gopen(url)
    except Exception as exc:  # noqa: BLE001 - a missing file, a refused url: counted, never raised
        on_skip("shard_error", url, f"cannot open: {type(exc).__name__}: {exc}")
        return
    failed = False  # one shard_error per shard at most

    def skip(reason: str, where: str, message: str) -> None:
        nonlocal failed
        if reason == "shard_error":
            if failed:
                return
            failed = True
        on_skip(reason, where, message)

    finished = False
    try:
        yield from _Grouper(url, skip).samples(_members(stream, url, skip))
        finished = True
    except (OSError, EOFError, ValueError, tarfile.TarError) as exc:  # a failed pipe: command, an I/O error
        skip("shard_error", url, f"read failed: {type(exc).__name__}: {exc}")
    finally:
        try:
            stream.close()
        except Exception as exc:  # noqa: BLE001 - a pipe: command's exit status
            if finished:
                skip("shard_error", url, f"{type(exc).__name__}: {exc}")


def read_shards(urls: Iterable[str], on_skip: SkipFn) -> Iterator[dict]:
    """The samples of ``urls`` in order (urls are drawn lazily: one shard is open at a time)."""
    for url in urls:
        yield from read_shard(url, on_skip)


class _Grouper:
    """Members -> samples; a sample next to damage is kept only when it holds the shard's usual members."""

    def __init__(self, url: str, on_skip: SkipFn) -> None:
        self.url, self.on_skip = url, on_skip
        self.reference: frozenset[str] | None = None  # extensions of the last intact sample
        self.held: list[dict] = []  # damaged samples met before any intact one

    def samples(self, members: Iterable[tuple]) -> Iterator[dict]:
        current: dict | None = None
        event: dict | None = None  # damage just met, waiting for the sample after it
        for kind, *rest in members:
            if kind == "damage":
                reason, detail = rest
                if event is not None:  # two stretches with no sample between them: one loss
                    event["detail"] += f"; {detail}"
                    continue
                event = {"reason": reason, "detail": detail, "waiting": 1, "dropped": 0}
                if current is not None:  # the sample before the damage may have lost its last members
                    event["waiting"] += 1
                    current["__events__"].append(event)
                continue
            key, ext, data = rest
            if current is not None and key != current["__key__"]:
                yield from self._finish(current)
                current = None
            if current is None:
                current = {"__key__": key, "__url__": self.url, "__events__": [], "__duplicate__": False}
            if event is not None:
                if event not in current["__events__"]:
                    current["__events__"].append(event)
                else:  # the damage fell inside this sample: it is its only neighbour
                    event["waiting"] -= 1
                event = None
            current["__duplicate__"] |= ext in current
            current[ext] = data
        if current is not None:
            yield from self._finish(current)
        if event is not None:  # damage at the very end: the sample before it was its only neighbour
            event["waiting"] -= 1
            self._settle(event)
        for sample in self.held:  # no intact sample in the whole shard to compare with
            self._judge(sample, keep=False)

    def _finish(self, sample: dict) -> Iterator[dict]:
        if sample["__duplicate__"]:
            self.on_skip("duplicate_member", f"{self.url}:{sample['__key__']}", "two members, one extension")
            self._judge(sample, keep=None)
            return
        if not sample["__events__"]:
            self.reference = _exts(sample)
            held, self.held = self.held, []
            for waiting in held:
                if self._judge(waiting, keep=_exts(waiting) == self.reference):
                    yield _clean(waiting)
            yield _clean(sample)
        elif self.reference is None:
            self.held.append(sample)
        elif self._judge(sample, keep=_exts(sample) == self.reference):
            yield _clean(sample)

    def _judge(self, sample: dict, keep: bool | None) -> bool:
        """Settle a sample's damage events; ``keep=False`` drops and counts it (None: counted elsewhere)."""
        events = sample.get("__events__", [])
        if keep is False:
            self.on_skip(
                events[0]["reason"],
                f"{self.url}:{sample['__key__']}",
                f"members {sorted(_exts(sample))} next to tar damage ({events[0]['detail']})",
            )
        for event in events:
            event["dropped"] += not keep
            event["waiting"] -= 1
            self._settle(event)
        return bool(keep)

    def _settle(self, event: dict) -> None:
        if event["waiting"] == 0 and not event["dropped"]:
            self.on_skip(event["reason"], self.url, f"{event['detail']}; samples inside it cannot be named")


def _exts(sample: dict) -> frozenset[str]:
    return frozenset(k for k in sample if not k.startswith("__"))


def _clean(sample: dict) -> dict:
    return {k: v for k, v in sample.items() if k not in ("__events__", "__duplicate__")}
