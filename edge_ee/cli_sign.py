"""`edge-ee sign`: an Ed25519 signature of a bundle's manifest digest (`manifest.sig`).

  edge-ee sign --generate-key KEY     write KEY (private, mode 0600) and KEY.pub
  edge-ee sign BUNDLE --key KEY       verify BUNDLE, then sign its manifest sha256

On the device, `edge-ee-run BUNDLE --trust KEY.pub` refuses the bundle unless the
signature verifies. Needs the `cryptography` package (`pip install 'edge-ee[sign]'`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from edge_ee.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    p = sub.add_parser("sign", help="sign a bundle's manifest (Ed25519) or make a key pair")
    p.add_argument("bundle", type=Path, nargs="?", default=None, help="bundle folder to sign")
    p.add_argument("--key", type=Path, default=None, help="Ed25519 private key (PEM)")
    p.add_argument("--generate-key", type=Path, default=None, metavar="KEY",
                   help="write a new key pair KEY and KEY.pub, then stop")
    return {"sign": cmd_sign}


def cmd_sign(a: argparse.Namespace) -> int:
    from device_runners.signing import generate_key, sign_manifest
    if a.generate_key is not None:
        if a.bundle is not None or a.key is not None:
            raise ConfigError("--generate-key makes a key pair only; sign in a second call: "
                              "edge-ee sign BUNDLE --key KEY")
        priv, pub = generate_key(a.generate_key)
        print(f"wrote {priv} (private: keep it on the host) and {pub} (copy to devices; "
              f"edge-ee-run --trust {pub.name})")
        return 0
    if a.bundle is None or a.key is None:
        raise ConfigError("pass a bundle and a key: edge-ee sign BUNDLE --key KEY "
                          "(make one with edge-ee sign --generate-key KEY)")
    path = sign_manifest(a.bundle, a.key)
    print(f"wrote {path}")
    return 0
