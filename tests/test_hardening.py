"""Attacks and faults against edge-ee-run, the bundle contract and the CLIs (issue 11).

Every attack class runs against a real bundle (the shipped Fashion-MNIST CNN with E2CM
exits) and, where an exit code matters, a real `edge-ee-run` / `edge-ee` subprocess:
each must end in a typed error (exit code 2, the message says the fix, no traceback),
never in silently wrong numbers or lost measurements, and nothing outside the bundle
folder is read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from device_runners.cli import main as run_main
from device_runners.errors import (
    BundleError,
    ChecksumError,
    InputSpecError,
    PowerSourceError,
    ProfileError,
    ResultsError,
)
from device_runners.inputs import load_input, read_arrays
from device_runners.manifest import load_bundle
from device_runners.power.meter_csv import UsbMeterCsv
from device_runners.profiles import load_profile
from device_runners.results import load_results, spool_path, write_results
from device_runners.spool import Spool, read_spool, recover
from tests.helpers_cli import run_cli

pytestmark = pytest.mark.shared_data
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def _cli(name: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_cli(name, *args, timeout=timeout)


def _typed(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, r.stderr[-1500:]
    assert "Traceback" not in r.stderr, r.stderr[-1500:]
    for w in words:
        assert w in r.stderr, r.stderr[-1500:]


def _copy(src: Path, tmp: Path, name: str = "b") -> Path:
    dst = tmp / name
    shutil.copytree(src, dst)
    return dst


def _edit(bundle: Path, fn) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    fn(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


FAST = ["--idle-s", "0", "--power-source", "null", "--profile", "none", "--warmup-runs", "1",
        "--quiet"]


# ----------------------------------------------------------------------------- closed bundle

def test_closed_bundle_refuses_escapes_and_unlisted_files(tmp_path: Path, fashion_bundle: Path
                                                          ) -> None:
    secret = tmp_path / "secret.onnx"
    secret.write_bytes(b"outside the bundle")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    cases = {
        "unlisted": (lambda b: (b / "extra.bin").write_bytes(b"x"), "does not list"),
        "absolute": (lambda b: _edit(b, lambda m: m["files"].update({str(secret): digest})),
                     "not a plain relative name"),
        "dotdot": (lambda b: _edit(b, lambda m: m["files"].update({"../secret.onnx": digest})),
                   "not a plain relative name"),
        "symlink": (lambda b: ((b / "link.onnx").symlink_to(secret),
                               _edit(b, lambda m: m["files"].update({"link.onnx": digest}))),
                    "resolves outside"),
        "segment_unlisted": (lambda b: _edit(b, lambda m: (
            m["segments"][1]["files"].update(onnx="../secret.onnx"))), "does not list"),
        "golden_outside": (lambda b: _edit(b, lambda m: m["golden"].update(
            file=str(secret))), "does not list"),
        "files_empty": (lambda b: _edit(b, lambda m: m.update(files={})), "does not list"),
        "not_regular": (lambda b: ((b / "d").mkdir(), _edit(b, lambda m: m["files"].update(
            {"d": "0" * 64}))), "not a regular file"),
    }
    for name, (attack, words) in cases.items():
        b = _copy(fashion_bundle, tmp_path, name)
        attack(b)
        with pytest.raises(BundleError, match=words) as e:
            load_bundle(b)
        assert digest[:12] not in str(e.value), name  # no hash of a file outside the bundle


def test_edited_manifest_values_are_typed_errors(tmp_path: Path, fashion_bundle: Path) -> None:
    edits = {
        "nan_threshold": lambda m: m["segments"][0]["exit"].update(threshold=float("nan")),
        "neg_threshold": lambda m: m["segments"][0]["exit"].update(threshold=-0.5,
                                                                   confidence="max_softmax"),
        "str_flops": lambda m: m["segments"][0].update(flops="many"),
        "files_list": lambda m: m.update(files=["seg0.onnx"]),
        "bad_digest": lambda m: m["files"].update({"seg0.onnx": "abc"}),
        "segment_str": lambda m: m["segments"].__setitem__(0, "seg0"),
        "raw_std_zero": lambda m: m["input"]["raw"].update(std=[0.0]),
    }
    for name, edit in edits.items():
        b = _copy(fashion_bundle, tmp_path, name)
        _edit(b, edit)
        with pytest.raises(BundleError):
            load_bundle(b)
    b = _copy(fashion_bundle, tmp_path, "bytes")
    (b / "manifest.json").write_bytes(b"\xff\xfe{" + b"[" * 10)
    with pytest.raises(BundleError, match="UTF-8"):
        load_bundle(b)
    (b / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="nests deeper"):
        load_bundle(b)


def test_manifest_digest_is_printed_recorded_and_pinned(tmp_path: Path, fashion_bundle: Path
                                                        ) -> None:
    sha = load_bundle(fashion_bundle).manifest_sha256
    out = tmp_path / "r.json"
    r = _cli("edge-ee-run", str(fashion_bundle), "--out", str(out), *FAST[:-1],
             "--expect-manifest-sha256", sha)
    assert r.returncode == 0, r.stderr[-1500:]
    assert sha in r.stderr and load_results(out)["bundle"]["manifest_sha256"] == sha
    # an edited threshold changes the manifest's digest: the pin refuses it
    b = _copy(fashion_bundle, tmp_path)
    _edit(b, lambda m: m["segments"][0]["exit"].update(threshold=0.01))
    _typed(_cli("edge-ee-run", str(b), "--out", str(out), *FAST, "--expect-manifest-sha256", sha),
           "--expect-manifest-sha256", sha)


def test_sign_and_trust(tmp_path: Path, fashion_bundle: Path) -> None:
    b = _copy(fashion_bundle, tmp_path)
    key = tmp_path / "key"
    r = _cli("edge-ee", "sign", "--generate-key", str(key))
    assert r.returncode == 0 and (tmp_path / "key.pub").is_file(), r.stderr
    assert (key.stat().st_mode & 0o077) == 0  # private key: owner only
    _typed(_cli("edge-ee", "sign", "--generate-key", str(key)), "never overwritten")
    r = _cli("edge-ee", "sign", str(b), "--key", str(key))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "r.json"
    r = _cli("edge-ee-run", str(b), "--out", str(out), *FAST, "--trust", str(key) + ".pub")
    assert r.returncode == 0, r.stderr[-1500:]
    assert load_results(out)["bundle"]["signature"]["algorithm"] == "ed25519"
    from device_runners.signing import SignatureError, generate_key, verify_signature
    _other, other_pub = generate_key(tmp_path / "other")
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signature(load_bundle(b), other_pub)
    _edit(b, lambda m: m["segments"][0]["exit"].update(threshold=0.01))
    _typed(_cli("edge-ee-run", str(b), "--out", str(out), *FAST, "--trust", str(key) + ".pub"),
           "signs another manifest")
    (b / "manifest.sig").unlink()
    with pytest.raises(SignatureError, match=r"no manifest\.sig"):
        verify_signature(load_bundle(b), other_pub)


# ----------------------------------------------------------------------------- inputs

def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_bad_input_files_are_typed_errors(tmp_path: Path, fashion_bundle: Path) -> None:
    b = load_bundle(fashion_bundle)
    x = np.zeros((4, 28, 28, 1), np.uint8)
    good = _npz_bytes(x=x, y=np.arange(4))
    cases: dict[str, tuple[bytes, str]] = {
        "plain.npy": (b"\x93NUMPY" + good[6:], "plain .npy"),
        "trunc.npz": (good[: len(good) // 2], "damaged or truncated"),
        "text.npz": (b"hello", "not an .npz"),
        "nan_labels.npz": (_npz_bytes(x=x, y=np.array([0, 1, np.nan, 2])), "NaN"),
        "str_labels.npz": (_npz_bytes(x=x, y=np.array(["a", "b", "c", "d"])), "strings"),
        "2d_labels.npz": (_npz_bytes(x=x, y=np.zeros((4, 2), np.int64)), "dimension"),
        "range_labels.npz": (_npz_bytes(x=x, y=np.array([0, 1, 2, 99])), "must be in 0..9"),
        "zero.npz": (_npz_bytes(x=x[:0]), "zero samples"),
        "no_x.npz": (_npz_bytes(images=x), "no array 'x'"),
        "obj.npz": (_npz_bytes(x=np.array([object()], dtype=object)), "Python objects"),
    }
    # a header that declares an enormous shape over a few bytes of data
    huge = io.BytesIO()
    with zipfile.ZipFile(huge, "w") as zf:
        hdr = io.BytesIO()
        np.lib.format.write_array_header_1_0(hdr, {"descr": "<f4", "fortran_order": False,
                                                   "shape": (10**9, 28, 28, 1)})
        zf.writestr("x.npy", hdr.getvalue() + b"\0" * 64)
    cases["huge.npz"] = (huge.getvalue(), "declares shape")
    for name, (data, words) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        t0 = time.monotonic()
        with pytest.raises(InputSpecError, match=words):
            load_input(b, p, None)
        assert time.monotonic() - t0 < 5, name
    with pytest.raises(InputSpecError, match="not a file"):
        read_arrays(tmp_path)


def test_nan_inputs_are_counted_not_scored_and_json_is_strict(tmp_path: Path, fashion_bundle: Path,
                                                              fashion) -> None:
    test = fashion[1]
    norm = load_bundle(fashion_bundle)
    x, _, _ = load_input(norm, None, None)  # golden inputs, already float32 NCHW
    xs = np.concatenate([x, x])
    xs[[1, 4]] = np.nan
    p = tmp_path / "nan.npz"
    np.savez(p, x=xs, y=test.labels[: len(xs)])
    out = tmp_path / "r.json"
    r = _cli("edge-ee-run", str(fashion_bundle), "--input", str(p), "--out", str(out), *FAST)
    assert r.returncode == 0, r.stderr[-1500:]
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    res = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in results"))
    assert res["protocol"]["nonfinite_inputs"] == {"count": 2, "indices": [1, 4]}
    assert len(res["samples"]["exit"]) == len(xs) - 2


# ----------------------------------------------------------------------------- CLI flags

BAD_RUN_FLAGS = [("--batch-size", "0"), ("--threads", "0"), ("--limit", "-1"),
                 ("--pin-cores", "a,b"), ("--idle-s", "inf"), ("--min-duration-s", "nan"),
                 ("--warmup-runs", "-3"), ("--min-runs", "x"), ("--power-period-ms", "0"),
                 ("--meter-clock-offset-ms", "nan"), ("--expect-manifest-sha256", "abc"),
                 ("--pin-cores", "1,1")]


def test_numeric_flags_are_checked_up_front(tmp_path: Path, fashion_bundle: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    for flag, value in BAD_RUN_FLAGS:
        with pytest.raises(SystemExit) as e:
            run_main([str(fashion_bundle), flag, value, "--out", str(tmp_path / "r.json")])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}" in err and "Traceback" not in err, (flag, err)
    # the same through real subprocesses (exit code, no traceback), and edge-ee build
    _typed(_cli("edge-ee-run", str(fashion_bundle), "--min-duration-s", "nan"), "--min-duration-s")
    for flag, value in [("--exit", "e2cm:abc"), ("--exits", "1,x"), ("--max-drop", "nan"),
                        ("--formats", "onnx,pdf")]:
        t0 = time.monotonic()
        _typed(_cli("edge-ee", "build", "--model", "fashion-cnn", "--out",
                    str(tmp_path / "o"), flag, value), flag)
        assert time.monotonic() - t0 < 30  # refused before any pass over data


def test_overwrite_replaces_only_bundles(tmp_path: Path, fashion_bundle: Path) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    afile = tmp_path / "notes.txt"
    afile.write_text("keep")
    for target, words in ((precious, "not an edge-ee bundle"), (afile, "a file")):
        _typed(_cli("edge-ee", "build", "--model", "fashion-cnn", "--out", str(target),
                    "--overwrite"), words)
    assert (precious / "thesis.tex").read_text() == "years of work" and afile.read_text() == "keep"
    from converters.atomic import check_replaceable
    check_replaceable(fashion_bundle, overwrite=True)  # a bundle may be replaced
    empty = tmp_path / "empty"
    empty.mkdir()
    check_replaceable(empty, overwrite=True)


# ----------------------------------------------------------------------------- nothing lost

def test_output_path_checked_before_measuring(tmp_path: Path, fashion_bundle: Path) -> None:
    afile = tmp_path / "f"
    afile.write_text("")
    for out, words in ((tmp_path, "is a folder"), (tmp_path / "no" / "r.json", "does not exist"),
                       (afile / "r.json", "not a folder")):
        r = _cli("edge-ee-run", str(fashion_bundle), "--out", str(out), "--idle-s", "0",
                 "--power-source", "null", "--min-duration-s", "60")
        _typed(r, "--out", words)
        assert "pass 1" not in r.stderr  # nothing was measured


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_keep_results(tmp_path: Path, fashion_bundle: Path,
                                         fashion_samples: Path, sig: int, code: int) -> None:
    out = tmp_path / "r.json"
    exe = BIN / "edge-ee-run"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "device_runners.cli"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([*cmd, str(fashion_bundle), "--input", str(fashion_samples), "--out",
                             str(out), "--min-duration-s", "120", "--idle-s", "0",
                             "--power-source", "null"], stderr=subprocess.PIPE, text=True, env=env)
    seen, deadline = "", time.monotonic() + 60
    while "pass 2" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.read(1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    res = load_results(out)
    assert res["complete"] is False and res["interrupted_by"] == signal.Signals(sig).name
    assert len(res["samples"]["exit"]) >= 200
    assert not spool_path(out).exists()  # the spool is removed once results.json is written


def test_failed_final_write_keeps_the_spool(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    out.mkdir()  # appears after the up-front check: the rename onto it fails
    doc = {"kind": "edge-ee-results", "schema_version": 1, "complete": True,
           "bundle": {"manifest_sha256": "ab" * 32, "model": "m"}, "backend": {"name": "ort"},
           "protocol": {"mode": "single"},
           "samples": {"exit": [0, 1, None], "confidence": [0.5, float("nan"), 0.25],
                       "segment_latency_ns": [[5], [6, 7], [8, 9, 10]]}}
    with pytest.raises(ResultsError, match=r"Is a directory.*kept in .*python -m "
                       r"device_runners\.spool") as e:
        write_results(out, doc)
    sp = spool_path(out)
    assert sp.is_file() and str(sp) in str(e.value)
    cols, meta = read_spool(sp)
    assert cols["exit"] == [0, 1, None] and cols["confidence"] == [0.5, None, 0.25]
    assert cols["segment_latency_ns"] == [[5], [6, 7], [8, 9, 10]]
    assert meta["kind"] == "edge-ee-results" and meta["_meta_is_last"]
    rec = recover(sp, tmp_path / "recovered.json")
    assert load_results(rec)["complete"] is True  # the whole run was spooled
    data = sp.read_bytes()
    sp.write_bytes(data[: len(data) - 10])  # cut: the closing header is gone
    assert load_results(recover(sp, tmp_path / "cut.json"))["complete"] is False


def test_spool_is_compact_and_survives_a_cut(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s", flush_rows=1000)
    for i in range(10_000):
        sp.append({"exit": i % 4, "prediction": i % 10, "confidence": 0.5, "label": None,
                   "pass": 0, "segment_latency_ns": [1000, 2000, 3000][: i % 4 + 1]})
    sp.close()
    size = (tmp_path / "s").stat().st_size
    per_row = size / 10_000
    assert 50 < per_row < 80  # 5 scalars x 8 B + 2.5 latencies x 8 B + 4 B, plus chunk headers
    data = (tmp_path / "s").read_bytes()
    (tmp_path / "cut").write_bytes(data[: len(data) - 100])  # a crash mid-chunk
    cols, _ = read_spool(tmp_path / "cut")
    assert len(cols["exit"]) == 9_000 and cols["label"][:3] == [None] * 3


# ----------------------------------------------------------------------------- profiles, meter

def _profile_text(**replace: str) -> str:
    text = (ROOT / "hardware_profiles" / "jetson-nano-10w.yaml").read_text()
    for a, b in replace.items():
        assert a in text
        text = text.replace(a, b)
    return text


def test_profiles_never_run_commands_and_numbers_are_checked(tmp_path: Path) -> None:
    cases = {
        "cmd": (_profile_text(**{"tool: nvpmodel": "check_command: touch /tmp/pwned"}),
                "no longer allowed.*tool: nvpmodel"),
        "tool": (_profile_text(**{"tool: nvpmodel": "tool: rm"}), "not a known tool"),
        "nan": (_profile_text(**{"idle_power_mw: ": "idle_power_mw: .nan #"}), "not a finite"),
        "neg": (_profile_text(**{"max_power_mw: ": "max_power_mw: -5 #"}), "must be >= 0"),
        "bomb": ('a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
                 'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n'
                 'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n',
                 "aliases"),
        "deep": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nests deeper"),
    }
    for name, (text, words) in cases.items():
        p = tmp_path / f"{name}.yaml"
        p.write_text(text)
        t0 = time.monotonic()
        with pytest.raises(ProfileError, match=words):
            load_profile(p)
        assert time.monotonic() - t0 < 2, name
    assert not Path("/tmp/pwned").exists()
    assert load_profile("jetson-nano-10w").power_mode.argv == ("nvpmodel", "-q")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00name: x")
    with pytest.raises(ProfileError, match="UTF-8"):
        load_profile(tmp_path / "bin.yaml")


def test_meter_csv_rows_are_checked(tmp_path: Path) -> None:
    rows = {
        "order": ("timestamp_s,power_w\n10,1.0\n12,1.1\n11,1.2\n", "out of time order"),
        "nan": ("timestamp_s,power_w\n10,1.0\n11,nan\n", "finite"),
        "neg": ("timestamp_s,power_w\n10,1.0\n11,-2\n", "non-negative"),
        "inf_t": ("timestamp_s,power_w\n10,1.0\ninf,2\n", "finite"),
        "short": ("timestamp_s,power_w\n10\n", "malformed"),
        "vi_nan": ("timestamp_s,voltage_v,current_a\n10,5,nan\n", "finite"),
    }
    for name, (text, words) in rows.items():
        p = tmp_path / f"{name}.csv"
        p.write_text(text)
        with pytest.raises(PowerSourceError, match=words):
            UsbMeterCsv(csv_path=str(p)).open()
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(PowerSourceError, match="UTF-8"):
        UsbMeterCsv(csv_path=str(tmp_path / "bin.csv")).open()
    with pytest.raises(PowerSourceError, match="clock_offset_ms"):
        UsbMeterCsv(csv_path="x.csv", clock_offset_ms=float("nan"))


# ----------------------------------------------------------------------------- reports

def test_report_on_hand_edited_results(tmp_path: Path, fashion_bundle: Path) -> None:
    out = tmp_path / "r.json"
    r = _cli("edge-ee-run", str(fashion_bundle), "--out", str(out), *FAST)
    assert r.returncode == 0, r.stderr[-1500:]
    good = json.loads(out.read_text())
    edits = {
        "exit_str": lambda d: d["samples"].update(exit=["abc"] * len(d["samples"]["exit"])),
        "ragged": lambda d: d["samples"]["prediction"].pop(),
        "power_nan": lambda d: d.update(power={**d["power"], "timestamp_ns": [1],
                                               "total_mw": [float("nan")]}),
        "complete_str": lambda d: d.update(complete="yes"),
        "sha": lambda d: d["bundle"].update(manifest_sha256=5),
    }
    for name, edit in edits.items():
        d = json.loads(json.dumps(good))
        edit(d)
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(d))
        with pytest.raises(ResultsError):
            load_results(p)
    _typed(_cli("edge-ee", "report", str(tmp_path / "exit_str.json"), "--bundle",
                str(fashion_bundle), "--out", str(tmp_path / "rep")), "samples.exit")
    (tmp_path / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ResultsError, match="nests deeper"):
        load_results(tmp_path / "deep.json")


def test_checksum_error_still_names_the_file(tmp_path: Path, fashion_bundle: Path) -> None:
    b = _copy(fashion_bundle, tmp_path)
    with open(b / "seg1.onnx", "r+b") as f:
        f.seek(50)
        f.write(b"\x01")
    with pytest.raises(ChecksumError, match=r"seg1\.onnx.*re-copy"):
        load_bundle(b)


def test_runner_without_cryptography(tmp_path: Path, fashion_bundle: Path) -> None:
    """No cryptography installed: a plain run works, --trust is a clear error."""
    code = ("import sys; sys.modules['cryptography'] = None\n"
            "from device_runners.cli import main\nsys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    base = [sys.executable, "-c", code, str(fashion_bundle), "--out", str(tmp_path / "r.json"),
            *FAST]
    r = subprocess.run(base, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-1500:]
    r = subprocess.run([*base, "--trust", str(tmp_path / "k.pub")], capture_output=True,
                       text=True, env=env, timeout=300)
    _typed(r, "cryptography", "without --trust")
