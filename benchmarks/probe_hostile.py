"""Hostile-input and fault probe of the dspseg CLI (issue 16, defects 1-6 plus malformed inputs).

Builds a fresh 16-image synthetic dataset in a temporary folder, trains one tiny run, then runs
every probe as a subprocess with a timeout and classifies its outcome automatically:

  works          exit 0 and the check of the expected files/outputs passes (or, for a probe that
                 must warn, the warning is printed)
  clear message  exit != 0, an `error:` line (or the probe's expected complaint), no traceback
  unclear        exit != 0 without a traceback but without a message naming the problem
  traceback      "Traceback" in stdout/stderr
  hang           the timeout was reached
  silent wrong   exit 0 but the result check fails (or a failure left a broken/partial output,
                 an orphan process, two writers of one folder)
  data loss      a file that existed before (checkpoint, dataset.json) changed or vanished

Full-disk probes mount a small tmpfs (needs root); they are skipped with the reason otherwise.
Prints a markdown table (probe, command, outcome, first line of the message) and the counts.

    .venv/bin/python benchmarks/probe_hostile.py [--keep]
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
DSPSEG = str(BIN / "dspseg") if (BIN / "dspseg").exists() else shutil.which("dspseg") or "dspseg"
TINY = ["--steps", "2", "--width", "4", "--set", "levels=3", "--set", "crop_size=32",
        "--set", "threads=1"]
SWEEP_TINY = ["--methods", "basic", "--acrs", "1", "--splits", "1", "--workers", "1", *TINY]
ENV = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1",
       "OMP_NUM_THREADS": "1"}
TIMEOUT = 90

W: Path  # work folder (set in main)
ROWS: list[dict] = []
ORDER = ["works", "clear message", "unclear", "traceback", "hang", "silent wrong", "data loss",
         "skipped"]


# ---------------------------------------------------------------------------------------- helpers
class Res:
    def __init__(self, rc, out, timed_out, cmd):
        self.rc, self.out, self.timed_out, self.cmd = rc, out, timed_out, cmd


def run(args, timeout=TIMEOUT) -> Res:
    cmd = [DSPSEG, *map(str, args)]
    p = subprocess.Popen(cmd, cwd=W, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        return Res(p.returncode, out, False, cmd)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        return Res(None, out or "", True, cmd)


def sha(p: Path) -> str | None:
    try:
        return hashlib.sha256(p.read_bytes()).hexdigest()
    except OSError:
        return None


def snapshot(paths) -> dict:
    files = {}
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix in (".pt", ".json", ".yaml", ".csv", ".tif"):
                    files[f] = sha(f)
        elif p.exists():
            files[p] = sha(p)
    return files


def lost(before: dict) -> list[str]:
    return [str(f.relative_to(W)) for f, h in before.items() if sha(f) != h]


def error_line(out: str) -> str | None:
    lines = [l.strip() for l in out.splitlines() if l.strip()]
    for i, s in enumerate(lines):
        if s.lower().startswith("error:"):
            if s.endswith(":") and i + 1 < len(lines):  # "N input(s) failed ...:" + the reason
                s += " " + lines[i + 1]
            return s
    return None


def first_line(out: str) -> str:
    for line in out.splitlines():
        if line.strip():
            return line.strip()
    return ""


def short(cmd) -> str:
    parts = [("dspseg" if c == DSPSEG else c) for c in cmd]
    s = " ".join(str(p).replace(str(W) + "/", "") for p in parts)
    for t in (" ".join(SWEEP_TINY), " ".join(TINY)):
        s = s.replace(t, "<tiny>")
    return s


def record(name, cmd, outcome, message="", note=""):
    msg = message.replace(str(W) + "/", "").replace("|", "\\|")
    if len(msg) > 160:
        msg = msg[:157] + "..."
    ROWS.append(dict(probe=name, cmd=cmd, outcome=outcome, message=msg, note=note))
    print(f"  [{outcome:13}] {name}: {msg}", file=sys.stderr, flush=True)


def judge(name, res: Res, *, check=None, expect_re=None, protect=(), fail_check=None,
          must_fail=True, cmd=None, before=None):
    """Classify one CLI call.

    check(res) -> (ok, note): result check for exit 0.  With no check, exit 0 of a probe that
    must fail is 'silent wrong'.  expect_re: a complaint that counts as a clear message (or, with
    exit 0, as the warning a 'works' needs).  fail_check(res) -> (ok, note): checked whatever the
    exit code (e.g. no partial output left).  protect: files that must not change.
    """
    cmd = cmd or short(res.cmd)
    before = before if before is not None else {}
    out = res.out
    err = error_line(out)
    m = re.search(expect_re, out, re.I | re.M) if expect_re else None
    msg = err or (m and next((l.strip() for l in out.splitlines()
                             if re.search(expect_re, l, re.I)), "")) or first_line(out)
    gone = lost(before)
    if res.timed_out:
        return record(name, cmd, "hang", f"no exit after {TIMEOUT} s; " + msg)
    if "Traceback" in out:
        tb = [l for l in out.strip().splitlines() if l.strip()][-1]
        return record(name, cmd, "traceback", tb.strip())
    if gone:
        return record(name, cmd, "data loss", "changed or missing: " + ", ".join(gone[:4]))
    if fail_check is not None:
        ok, note = fail_check(res)
        if not ok:
            return record(name, cmd, "silent wrong", f"exit {res.rc}: {note}; {msg}")
    if res.rc == 0:
        if check is not None:
            ok, note = check(res)
            if ok and m:  # the warning/notice the probe looks for
                msg = next(l.strip() for l in out.splitlines() if re.search(expect_re, l, re.I))
            return record(name, cmd, "works" if ok else "silent wrong",
                          (f"{note}; {msg}" if note else msg) if ok else f"exit 0 but {note}")
        if expect_re and m:
            return record(name, cmd, "works", msg)
        if must_fail:
            return record(name, cmd, "silent wrong", "exit 0, nothing refused: " + msg)
        return record(name, cmd, "works", msg)
    if err or m:
        return record(name, cmd, "clear message", msg)
    return record(name, cmd, "unclear", f"exit {res.rc}: " + msg)


def readable(folder: Path) -> tuple[bool, str]:
    """Every image file left in folder opens and decodes (no truncated output)."""
    from PIL import Image
    bad = []
    for f in sorted(Path(folder).rglob("*")) if Path(folder).exists() else []:
        try:
            if f.suffix.lower() == ".png":
                with Image.open(f) as im:
                    im.load()
            elif f.suffix.lower() in (".tif", ".tiff"):
                tifffile.imread(f)
            elif f.suffix == ".pt" or f.suffix == ".safetensors":
                if f.stat().st_size == 0:
                    raise OSError("0 bytes")
        except Exception as e:  # noqa: BLE001
            bad.append(f"{f.name} ({type(e).__name__})")
    return (not bad, "broken file(s) left: " + ", ".join(bad[:3]) if bad else "")


@contextlib.contextmanager
def tmpfs(name: str, size_k: int):
    mnt = W / name
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_k}k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        yield None, (r.stderr.strip() or "mount failed").splitlines()[0]
        return
    try:
        yield mnt, None
    finally:
        for _ in range(5):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        else:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path, leave_k: int):
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    n = max(0, free - leave_k * 1024)
    with open(mnt / "filler", "wb") as f:
        f.write(b"\0" * n)


def copy_ds(src: Path, name: str) -> Path:
    dst = W / name
    shutil.copytree(src, dst)
    return dst


def edit_json(ds: Path, fn):
    j = json.loads((ds / "dataset.json").read_text())
    fn(j)
    (ds / "dataset.json").write_text(json.dumps(j, indent=1))


def rewrite_masks(ds: Path, fn):
    for m in sorted((ds / "masks").glob("*.tif")):
        tifffile.imwrite(m, fn(tifffile.imread(m)))


def label_shape(folder: Path, stem: str):
    f = next(iter(sorted(Path(folder).glob(stem + "*.tif*"))), None)
    return None if f is None else tifffile.imread(f).shape


# ---------------------------------------------------------------------------------------- probes
def probe_concurrent_train(d):
    out = W / "run_twice"
    cmd = ["train", d, "--out", out, *TINY]
    procs = [subprocess.Popen([DSPSEG, *map(str, cmd)], cwd=W, env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL) for _ in range(2)]
    res = []
    for p in procs:
        try:
            o, _ = p.communicate(timeout=TIMEOUT)
            res.append(Res(p.returncode, o, False, [DSPSEG, *map(str, cmd)]))
        except subprocess.TimeoutExpired:
            p.kill()
            res.append(Res(None, p.communicate()[0], True, [DSPSEG, *map(str, cmd)]))
    c = "2 x (" + short(res[0].cmd) + ") at once"
    both = Res(0 if all(r.rc == 0 for r in res) else 1,
               "\n".join(r.out for r in res), any(r.timed_out for r in res), res[0].cmd)
    ok_runs = [r for r in res if r.rc == 0]
    if not both.timed_out and "Traceback" not in both.out and len(ok_runs) == 2:
        return record("1 two train, one --out", c, "silent wrong",
                      "both exit 0: two writers of one run folder")
    if len(ok_runs) == 1 and not both.timed_out and "Traceback" not in both.out:
        other = next(r for r in res if r.rc != 0)
        good, note = readable(out / "checkpoints")
        if not (out / "checkpoints" / "last.pt").exists():
            good, note = False, "the run that exited 0 left no last.pt"
        outcome = "clear message" if error_line(other.out) and good else (
            "unclear" if good else "silent wrong")
        return record("1 two train, one --out", c, outcome,
                      (error_line(other.out) or first_line(other.out)) + (f"; {note}" if note else ""))
    judge("1 two train, one --out", both, cmd=c)


def alive_in_group(pgid: int) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    pids.append(int(p.name))
            except (OSError, IndexError, ValueError):
                continue  # the process ended while its stat was read: nothing left to count
    return pids


def probe_sweep_kill(e, sig):
    name = f"1 sweep {signal.Signals(sig).name} then rerun"
    out = W / f"sweep_{signal.Signals(sig).name.lower()}"
    args = ["sweep", "--data", e, "--out", out, *SWEEP_TINY]
    cmd = [DSPSEG, *map(str, args)]
    p = subprocess.Popen(cmd, cwd=W, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < 60 and p.poll() is None:  # wait until a run has started training
        logs = list((out / "logs").glob("*.log")) if (out / "logs").exists() else []
        if logs and any(f.stat().st_size > 0 for f in logs):
            break
        time.sleep(0.2)
    time.sleep(1.0)
    finished_first = p.poll() is not None
    os.kill(p.pid, sig)
    try:
        first_out, _ = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        first_out, _ = p.communicate()
    time.sleep(2.0)  # give workers a moment to notice their parent is gone
    orphans = alive_in_group(p.pid)
    res = run(args, timeout=TIMEOUT)
    orphans_after = alive_in_group(p.pid)
    for pid in orphans_after:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    c = f"kill -{signal.Signals(sig).name[3:]} (sweep ... --out {out.name}); then the same sweep"

    def check(r):
        if orphans:
            return False, f"{len(orphans)} orphan worker(s) still running after the parent exited"
        rows = [l for l in (out / "results.csv").read_text().splitlines()[1:] if l.strip()] \
            if (out / "results.csv").exists() else []
        if len(rows) != 1 or ",done," not in rows[0]:
            return False, f"results.csv has {len(rows)} row(s), not 1 done"
        logs = list((out / "logs").glob("*.log"))
        for lg in logs:
            text = lg.read_text(errors="replace")
            starts = len(re.findall(r"^(?:reading |training |method:)", text, re.M))
            if starts > 2:
                return False, f"{lg.name} shows {starts} starts"
        note = "no orphan, results.csv 1 done"
        if finished_first:
            note += " (the sweep had finished before the signal)"
        return True, note
    first = "interrupted: " + (error_line(first_out) or first_line(first_out) or "(no output)")
    if "Traceback" in first_out:
        return record(name, c, "traceback", "on the signal: " +
                      [l for l in first_out.strip().splitlines() if l.strip()][-1])
    judge(name, res, check=check, cmd=c, must_fail=False)
    ROWS[-1]["message"] = (first + " / rerun: " + ROWS[-1]["message"])[:200]


def probe_full_disk(name, size_k, leave_k, args_fn, *, prepare=None, protect_fn=None,
                    out_fn=None, partial_ok=False):
    with tmpfs("mnt_" + re.sub(r"\W+", "_", name)[:20], size_k) as (mnt, why):
        if mnt is None:
            return record(name, "(tmpfs)", "skipped", f"cannot mount a tmpfs: {why}")
        if prepare:
            prepare(mnt)
        fill(mnt, leave_k)
        before = snapshot(protect_fn(mnt)) if protect_fn else {}
        args = args_fn(mnt)
        res = run(args)
        outdir = out_fn(mnt) if out_fn else None

        def fail_check(r):
            if outdir is None:
                return True, ""
            ok, note = readable(outdir)
            if not ok:
                return ok, note
            if r.rc != 0 and not partial_ok and outdir.exists() and any(
                    f.is_file() for f in outdir.rglob("*")):
                return False, f"partial output left in {outdir.name}/"
            return True, ""
        judge(name, res, protect=(), before=before, fail_check=fail_check,
              cmd=short(res.cmd) + f"  [tmpfs {size_k}k, {leave_k}k free]")


def main():
    global W, TIMEOUT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--timeout", type=int, default=TIMEOUT)
    a = ap.parse_args()
    TIMEOUT = a.timeout
    W = Path(tempfile.mkdtemp(prefix="dspseg_probe_"))
    t0 = time.time()
    try:
        body()
    finally:
        # unmount anything left mounted under W before removing it
        for line in Path("/proc/mounts").read_text().splitlines():
            mp = line.split()[1]
            if mp.startswith(str(W)):
                subprocess.run(["umount", "-l", mp], capture_output=True)
        if not a.keep:
            shutil.rmtree(W, ignore_errors=True)
        else:
            print(f"kept {W}", file=sys.stderr)
    print_table(time.time() - t0)


def body():
    print(f"work folder {W}", file=sys.stderr)
    d = W / "data"
    r = W / "run"
    for args in (["synth", d, "--images", 16, "--size", 64, "--seed", 0],
                 # seed 0 cannot be split for a sweep (a class in too few groups): seed 2 can
                 ["synth", W / "sweepdata", "--images", 16, "--size", 64, "--seed", 2],
                 ["train", d, "--out", r, *TINY]):
        res = run(args)
        if res.rc != 0:
            sys.exit(f"setup failed: {short(res.cmd)}\n{res.out}")
    e = W / "sweepdata"
    classes = json.loads((d / "dataset.json").read_text())["classes"]
    base = snapshot([d, r])
    imgs = sorted((d / "images").glob("*.tif"))

    # -- defect 1: one writer per folder, sweep owns its workers
    probe_concurrent_train(d)
    probe_sweep_kill(e, signal.SIGTERM)
    probe_sweep_kill(e, signal.SIGKILL)
    res = run(["sweep", "--data", d, "--out", W / "sweep_seed0", *SWEEP_TINY])
    judge("1 sweep on an unsplittable set", res)

    # -- defect 2: full disk
    probe_full_disk("2 full disk: train", 160, 24, lambda m: ["train", d, "--out", m / "r", *TINY],
                    out_fn=lambda m: m / "r", partial_ok=True)

    def prep_resume(m):
        shutil.copytree(r, m / "r")
    probe_full_disk("2 full disk: train --resume", 1024, 16,
                    lambda m: ["train", d, "--out", m / "r", "--resume", *TINY[:1], "4", *TINY[2:]],
                    prepare=prep_resume, protect_fn=lambda m: [m / "r" / "checkpoints"],
                    out_fn=lambda m: m / "r" / "checkpoints", partial_ok=True)
    probe_full_disk("2 full disk: predict --overlay", 256, 12,
                    lambda m: ["predict", r, d / "images", "--out", m / "p", "--overlay"],
                    out_fn=lambda m: m / "p", partial_ok=True)
    sweep_done = W / "sweep_sigterm"
    probe_full_disk("2 full disk: report", 64, 8,
                    lambda m: ["report", sweep_done, "--out", m / "rep"],
                    out_fn=lambda m: m / "rep", partial_ok=True)
    probe_full_disk("2 full disk: export", 64, 8,
                    lambda m: ["export", r, "--format", "safetensors", "--out", m / "x"],
                    out_fn=lambda m: m / "x")
    probe_full_disk("2 full disk: convert", 128, 16,
                    lambda m: ["convert", "labels", d / "masks", "--images", d / "images",
                               "--classes", ",".join(classes), "--out", m / "c"],
                    out_fn=lambda m: m / "c")
    probe_full_disk("2 full disk: synth", 64, 8,
                    lambda m: ["synth", m / "s", "--images", 16, "--size", 64, "--seed", 0],
                    out_fn=lambda m: m / "s")
    probe_full_disk("2 full disk: sweep", 512, 16,
                    lambda m: ["sweep", "--data", e, "--out", m / "sw", *SWEEP_TINY],
                    out_fn=lambda m: m / "sw" / "runs", partial_ok=True)

    # -- defect 3: images read as they are meant
    df = copy_ds(d, "data_float")
    im0 = df / "images" / imgs[0].name
    tifffile.imwrite(im0, tifffile.imread(im0).astype(np.float32))  # same values, float32 0..255
    before = snapshot([df / "dataset.json"])
    res = run(["validate", df])
    warn = r"float32|dtype|pixel type|value range|scale"
    judge("3 float32 0..255 among uint8: validate", res, before=before, must_fail=False,
          check=lambda rr: (True, "") if re.search(warn, rr.out, re.I)
          else (False, "no warning about the mixed pixel types"), expect_re=warn)

    ome = W / "in_ome" / "multi.ome.tif"
    ome.parent.mkdir()
    big = tifffile.imread(imgs[0])
    with tifffile.TiffWriter(ome, ome=True) as tw:
        tw.write(big[::4, ::4].copy(), metadata={"axes": "YX"})
        tw.write(big, metadata={"axes": "YX"})
    res = run(["predict", r, ome, "--out", W / "pred_ome"])
    judge("3 multi-series OME-TIFF (16x16 + 64x64): predict", res, must_fail=False,
          check=lambda rr: ((s := label_shape(W / "pred_ome", "multi")) == (64, 64),
                            f"label {s} for the 64x64 series"),
          expect_re=r"series")

    pages = W / "in_pages" / "pages.tif"
    pages.parent.mkdir()
    tifffile.imwrite(pages, np.stack([big, big, big]), metadata=None)
    res = run(["predict", r, pages, "--out", W / "pred_pages"])
    judge("3 multi-page TIFF, no axes: predict", res, must_fail=False, expect_re=r"page",
          check=lambda rr: (True, "") if re.search(r"page", rr.out, re.I)
          else (False, "no warning that pages were taken as channels"))

    # -- defect 4: --resume trusts the folder
    def resume_edited(folder: Path, old: str, new: str) -> None:
        """Hand-edit config.yaml's method from ``old`` to ``new``, then --resume."""
        cfg = folder / "config.yaml"
        cfg.write_text(re.sub(rf"^method: {old}$", f"method: {new}", cfg.read_text(), flags=re.M))
        before = snapshot([folder / "checkpoints"])
        res = run(["train", d, "--out", folder, "--resume", "--steps", "4", *TINY[2:]])
        judge(f"4 resume after config.yaml {old}->{new}", res, before=before, expect_re=rf"method|{old}|{new}")

    rd = W / "run_dsp"
    res = run(["train", d, "--out", rd, "--method", "dsp", *TINY])
    if res.rc == 0:
        resume_edited(rd, "dsp", "pseudolabel")
    else:
        judge("4 resume after config.yaml dsp->pseudolabel (setup: train dsp)", res)
    rf = W / "run_fixmatch_edit"
    shutil.copytree(r, rf)
    resume_edited(rf, "basic", "fixmatch")

    r0 = W / "run_empty_last"
    shutil.copytree(r, r0)
    (r0 / "checkpoints" / "last.pt").write_bytes(b"")
    before = snapshot([r0 / "checkpoints" / "best.pt"])
    judge("4 0-byte last.pt: train --resume",
          run(["train", d, "--out", r0, "--resume", "--steps", "4", *TINY[2:]]), before=before,
          expect_re=r"last\.pt")
    rb = W / "run_empty_best"
    shutil.copytree(r, rb)
    (rb / "checkpoints" / "best.pt").write_bytes(b"")
    before = snapshot([rb / "checkpoints" / "last.pt"])
    judge("4 0-byte best.pt: evaluate", run(["evaluate", rb, d, "--split", "train"]),
          before=before, expect_re=r"best\.pt")
    judge("4 0-byte best.pt: predict",
          run(["predict", rb, imgs[0], "--out", W / "pred_empty_best"]), before=before,
          expect_re=r"best\.pt")

    # -- defect 5: one bad file must not stop a batch
    def bad_folder(tag, make):
        f = W / f"in_{tag}"
        f.mkdir()
        for i in imgs[:2]:
            shutil.copy(i, f / i.name)
        make(f / "x.tif")
        out = W / f"pred_{tag}"
        res = run(["predict", r, f, "--out", out], timeout=60)
        good = [label_shape(out, i.stem) for i in imgs[:2]]

        def fail_check(rr):
            if any(s != (64, 64) for s in good):
                return False, f"good images not all written (shapes {good})"
            return True, ""
        judge(f"5 predict folder with {tag} x.tif", res, fail_check=fail_check,
              expect_re=r"x\.tif", must_fail=True)
    bad_folder("corrupt", lambda p: p.write_bytes(b"II*\0" + os.urandom(200)))
    bad_folder("directory", lambda p: p.mkdir())
    bad_folder("broken-symlink", lambda p: p.symlink_to(W / "nowhere.tif"))
    bad_folder("fifo", lambda p: os.mkfifo(p))

    # -- defect 6: datasets that cannot train
    di = copy_ds(d, "data_all_ignore")
    rewrite_masks(di, lambda m: np.full_like(m, 255))
    judge("6 every mask pixel ignore_index: train",
          run(["train", di, "--out", W / "run_ignore", *TINY]), before=snapshot([di / "dataset.json"]),
          expect_re=r"annotated|ignore")
    d1 = copy_ds(d, "data_one_class")
    rewrite_masks(d1, lambda m: np.zeros_like(m))
    edit_json(d1, lambda j: j.update(classes=["cell"]))
    judge("6 one-class dataset: train",
          run(["train", d1, "--out", W / "run_one", *TINY]), before=snapshot([d1 / "dataset.json"]),
          expect_re=r"class")

    # -- malformed inputs
    dm = copy_ds(d, "data_badjson")
    (dm / "dataset.json").write_text((dm / "dataset.json").read_text()[:300])
    b = snapshot([dm / "dataset.json"])
    judge("M malformed dataset.json: validate", run(["validate", dm]), before=b, expect_re=r"json")
    judge("M malformed dataset.json: train", run(["train", dm, "--out", W / "run_badjson", *TINY]),
          before=b, expect_re=r"json")
    dmi = copy_ds(d, "data_missing_image")
    (dmi / "images" / imgs[3].name).unlink()
    b = snapshot([dmi / "dataset.json"])
    judge("M missing image: validate", run(["validate", dmi]), before=b, expect_re=imgs[3].name)
    judge("M missing image: train", run(["train", dmi, "--out", W / "run_missing", *TINY]),
          before=b, expect_re=imgs[3].name)

    def set_box(cls, xyxy):
        def fn(j):
            rec = j["images"][0]
            rec.pop("mask", None)
            rec["boxes"] = [{"class": cls, "xyxy": xyxy}]
        return fn
    db = copy_ds(d, "data_box_outside")
    edit_json(db, set_box("mitochondrion", [40, 40, 500, 500]))
    judge("M box outside the image: validate", run(["validate", db]),
          before=snapshot([db / "dataset.json"]), expect_re=r"box|outside")
    du = copy_ds(d, "data_unknown_class")
    edit_json(du, set_box("unicorn", [4, 4, 20, 20]))
    judge("M unknown class: validate", run(["validate", du]),
          before=snapshot([du / "dataset.json"]), expect_re=r"unicorn")
    de = copy_ds(d, "data_escape")
    secret = W / "outside.tif"
    shutil.copy(imgs[0], secret)
    edit_json(de, lambda j: j["images"][0].update(file="../outside.tif"))
    b = snapshot([de / "dataset.json"])
    judge("M path escaping the folder: validate", run(["validate", de]), before=b,
          expect_re=r"outside|escap|\.\./")
    judge("M path escaping the folder: train", run(["train", de, "--out", W / "run_escape", *TINY]),
          before=b, expect_re=r"outside|escap|\.\./")

    gone = lost(base)
    record("base dataset and run untouched", "(hashes of data/ and run/ before and after)",
           "data loss" if gone else "works", ", ".join(gone[:4]) if gone else "all files unchanged")


def print_table(seconds):
    print("| # | probe | command | outcome | first line of the message |")
    print("|---|---|---|---|---|")
    for i, row in enumerate(ROWS, 1):
        print(f"| {i} | {row['probe']} | `{row['cmd']}` | {row['outcome']} | {row['message']} |")
    counts = {k: sum(r["outcome"] == k for r in ROWS) for k in ORDER}
    tried = len(ROWS) - counts["skipped"]
    print()
    print(f"tried {tried} / works {counts['works']} / clear message {counts['clear message']} / "
          f"unclear {counts['unclear']} / traceback {counts['traceback']} / hang {counts['hang']} / "
          f"silent wrong {counts['silent wrong']} / data loss {counts['data loss']} / "
          f"skipped {counts['skipped']}  ({seconds:.0f} s)")
    bad = counts["traceback"] + counts["hang"] + counts["silent wrong"] + counts["data loss"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
