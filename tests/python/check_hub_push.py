"""Reads a dataset that distill pushed, from a Hub (HF_ENDPOINT), with the official clients only:
huggingface_hub downloads the repository, pyarrow reads each Parquet file, and `datasets` loads
each config as the card declares it, from the download and straight from the Hub
(`load_dataset(REPO, CONFIG)`).

usage: check_hub_push.py REPO CONFIG [CONFIG ...]
Prints one JSON line per config: {"config", "rows", "ids", "files"}; `ids` are the sorted values
of the `id` column. Exits 1 when pyarrow and `datasets` disagree.
"""

import json
import pathlib
import sys
import tempfile

import datasets
import pyarrow.parquet as pq
from huggingface_hub import HfApi, snapshot_download


def main() -> int:
    repo, configs = sys.argv[1], sys.argv[2:]
    api = HfApi()
    listed = set(api.list_repo_files(repo, repo_type="dataset"))
    with tempfile.TemporaryDirectory() as tmp:
        local = pathlib.Path(
            snapshot_download(repo, repo_type="dataset", local_dir=pathlib.Path(tmp) / "snap")
        )
        card = (local / "README.md").read_text()
        status = 0
        for config in configs:
            files = sorted((local / config / "train").glob("*.parquet"))
            arrow_ids = []
            for f in files:
                arrow_ids.extend(pq.read_table(f).column("id").to_pylist())
            loaded = datasets.load_dataset(str(local), config, split="train")
            ds_ids = list(loaded["id"])
            remote = datasets.load_dataset(repo, config, split="train")
            remote_ids = list(remote["id"])
            if not (sorted(arrow_ids) == sorted(ds_ids) == sorted(remote_ids)):
                print(f"{config}: pyarrow, datasets on the download and datasets on the Hub disagree", file=sys.stderr)
                status = 1
            rel = [str(f.relative_to(local)) for f in files]
            if not set(rel) <= listed:
                print(f"{config}: downloaded files not listed: {rel}", file=sys.stderr)
                status = 1
            if f"config_name: {config}" not in card:
                print(f"{config}: not in the card", file=sys.stderr)
                status = 1
            print(json.dumps({"config": config, "rows": len(ds_ids), "ids": sorted(ds_ids), "files": rel}))
        return status


if __name__ == "__main__":
    sys.exit(main())
