"""Ship a cached teacher with the package: copy it into nas_kd/shipped/ and write its manifest entry.

    nas-kd teacher --preset standard --reconstruction            # trains and caches it (runs/teachers/)
    python scripts/ship_teacher.py runs/teachers/<key>.pt \\
        --command "nas-kd teacher --preset standard --reconstruction"

The entry records the file's SHA-256 (checked on every load), the command and recipe that made
it, its accuracies, its seed (= the validation split the search must use), the machine and the
versions. Refuses a checkpoint under --min-accuracy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys


def main(argv=None) -> int:
    import torch

    from nas_kd.device import device_name
    from nas_kd.files import digest
    from nas_kd.models.shipped import SHIPPED_DIR

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a cached teacher (nas-kd teacher's output)")
    p.add_argument("--command", required=True, help="the command that trained it, as it was typed")
    p.add_argument("--hardware", default=None, help="what it was trained on (default: the device its checkpoint names, else this machine's CPU, core count and torch threads)")
    p.add_argument("--min-accuracy", type=float, default=0.935, help="refuse a teacher below this test accuracy (default 0.935)")
    args = p.parse_args(argv)

    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    meta = ckpt["meta"]
    if meta["test_accuracy"] < args.min_accuracy:
        print(f"refusing: test accuracy {meta['test_accuracy']:.4f} is under --min-accuracy {args.min_accuracy}", file=sys.stderr)
        return 2
    name = f"{meta['dataset']}_{meta['arch'].replace(':', '-')}{'_recon' if meta['reconstruction'] else ''}_s{meta['seed']}.pt"
    SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.checkpoint, SHIPPED_DIR / name)
    manifest_path = SHIPPED_DIR / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"teachers": {}}
    manifest["teachers"][meta["dataset"]] = {
        "dataset": meta["dataset"],
        "file": name,
        "sha256": digest(SHIPPED_DIR / name),
        "arch": meta["arch"],
        "test_accuracy": meta["test_accuracy"],
        "val_accuracy": meta["val_accuracy"],
        "seed": meta["seed"],
        "reconstruction": meta["reconstruction"],
        "command": args.command,
        "recipe": meta["recipe"],
        "train_seconds": meta["train_seconds"],
        # Checkpoints made before they named their device (2026-12-06) were trained where they are shipped.
        "hardware": args.hardware or meta.get("trained_on") or device_name(torch.device("cpu")),
        "versions": meta["versions"],
        "created": meta["created"],
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"shipped {SHIPPED_DIR / name} ({meta['arch']}, test {meta['test_accuracy']:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
