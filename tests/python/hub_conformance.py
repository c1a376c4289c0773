"""Drives distill's Hub test double (distill_testkit::mock_hub) with the official
`huggingface_hub` client and `datasets`, to show that the double speaks the real protocol.

usage: hub_conformance.py MODE REPO [WORKDIR]
  round_trip REPO WORKDIR  create (private, twice), upload a README and a Parquet file (through
                           LFS), list, download, snapshot, load with `datasets`. Leaves the
                           uploaded bytes in WORKDIR/README.md and WORKDIR/train.parquet and
                           prints {"commits": [oid, oid]} on the last line.
  denied REPO              every call must fail with 401 (no token or a wrong one).
  read_only REPO           REPO exists and is empty; reads work, writes fail with 403.

The environment gives HF_ENDPOINT (the double), HF_TOKEN, HF_HOME and HF_HUB_DISABLE_XET=1.
Exits non-zero on any mismatch.
"""

import hashlib
import json
import pathlib
import sys

from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
---
# Conformance

Rows written by pyarrow, read back by `datasets`.
"""

PARQUET_PATH = "data/train-00000-of-00001.parquet"
ROWS = [{"id": i, "text": f"row {i} é", "score": i / 2} for i in range(25)]


def expect_status(status, call, *args, **kwargs):
    """Runs a call that must fail with an HTTP error of `status`."""
    try:
        call(*args, **kwargs)
    except HfHubHTTPError as e:
        got = e.response.status_code if e.response is not None else None
        assert got == status, f"{call.__name__}: expected {status}, got {got}: {e}"
        return e
    raise AssertionError(f"{call.__name__} should have failed with {status}")


def expect_raises(kind, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except kind as e:
        return e
    raise AssertionError(f"{call.__name__} should have raised {kind.__name__}")


def round_trip(repo, workdir):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    api = HfApi()
    assert api.whoami()["name"], "whoami has a name"
    url = api.create_repo(repo, repo_type="dataset", private=True)
    assert url.repo_id == repo and url.repo_type == "dataset", url
    again = api.create_repo(repo, repo_type="dataset", private=True, exist_ok=True)
    assert again.repo_id == repo, again
    expect_status(409, api.create_repo, repo, repo_type="dataset")

    readme = README.encode()
    (workdir / "README.md").write_bytes(readme)
    first = api.upload_file(
        path_or_fileobj=readme, path_in_repo="README.md", repo_id=repo, repo_type="dataset",
        commit_message="Add the card",
    )

    table = pa.Table.from_pylist(ROWS)
    local_parquet = workdir / "train.parquet"
    pq.write_table(table, local_parquet)
    parquet = local_parquet.read_bytes()
    assert parquet.startswith(b"PAR1")
    second = api.upload_file(
        path_or_fileobj=str(local_parquet), path_in_repo=PARQUET_PATH, repo_id=repo,
        repo_type="dataset", commit_message="Add the rows",
    )
    assert first.oid != second.oid and len(second.oid) == 40, (first.oid, second.oid)

    files = api.list_repo_files(repo, repo_type="dataset")
    assert sorted(files) == sorted(["README.md", PARQUET_PATH]), files

    # The Parquet file went through LFS, the README did not.
    sha = hashlib.sha256(parquet).hexdigest()
    tree = {f.path: f for f in api.list_repo_tree(repo, repo_type="dataset", recursive=True)}
    assert tree[PARQUET_PATH].lfs is not None, tree[PARQUET_PATH]
    assert tree[PARQUET_PATH].lfs.sha256 == sha and tree[PARQUET_PATH].size == len(parquet)
    assert tree["README.md"].lfs is None and tree["README.md"].size == len(readme)
    assert "data" in tree, "the tree lists the data directory"
    top = [f.path for f in api.list_repo_tree(repo, repo_type="dataset")]
    assert sorted(top) == ["README.md", "data"], top
    inside = [f.path for f in api.list_repo_tree(repo, path_in_repo="data", repo_type="dataset")]
    assert inside == [PARQUET_PATH], inside
    info = api.get_paths_info(repo, [PARQUET_PATH, "README.md", "missing.txt"], repo_type="dataset")
    by_path = {f.path: f for f in info}
    assert set(by_path) == {PARQUET_PATH, "README.md"}, by_path
    assert by_path[PARQUET_PATH].lfs.sha256 == sha and by_path["README.md"].lfs is None

    repo_info = api.repo_info(repo, repo_type="dataset")
    assert repo_info.private is True, repo_info
    assert repo_info.sha == second.oid, (repo_info.sha, second.oid)
    assert sorted(s.rfilename for s in repo_info.siblings) == sorted(files)
    assert api.file_exists(repo, PARQUET_PATH, repo_type="dataset")
    assert not api.file_exists(repo, "nope.txt", repo_type="dataset")
    commits = api.list_repo_commits(repo, repo_type="dataset")
    assert [c.commit_id for c in commits[:2]] == [second.oid, first.oid], commits
    assert commits[0].title == "Add the rows", commits[0]

    # Downloads, byte for byte; the first revision still has only the card.
    for path, expected in [("README.md", readme), (PARQUET_PATH, parquet)]:
        got = pathlib.Path(hf_hub_download(repo, path, repo_type="dataset")).read_bytes()
        assert got == expected, f"{path}: downloaded bytes differ"
    old = hf_hub_download(repo, "README.md", repo_type="dataset", revision=first.oid)
    assert pathlib.Path(old).read_bytes() == readme
    expect_raises(EntryNotFoundError, hf_hub_download, repo, PARQUET_PATH, repo_type="dataset",
                  revision=first.oid)
    expect_raises(EntryNotFoundError, hf_hub_download, repo, "nope.txt", repo_type="dataset")
    expect_raises(RevisionNotFoundError, hf_hub_download, repo, "README.md", repo_type="dataset",
                  revision="other-branch")
    expect_raises(RepositoryNotFoundError, api.repo_info, repo + "-missing", repo_type="dataset")

    snapshot = pathlib.Path(snapshot_download(repo, repo_type="dataset"))
    assert (snapshot / "README.md").read_bytes() == readme
    assert (snapshot / PARQUET_PATH).read_bytes() == parquet

    # `datasets` reads the rows back: from the snapshot, and from the double itself.
    local = datasets.load_dataset("parquet", data_files=str(snapshot / "data" / "*.parquet"))
    assert local["train"].to_list() == ROWS, local["train"].to_list()[:3]
    remote = datasets.load_dataset(repo)
    assert remote["train"].to_list() == ROWS, remote["train"].to_list()[:3]

    print(json.dumps({"commits": [first.oid, second.oid]}))


def denied(repo):
    api = HfApi()
    expect_status(401, api.create_repo, repo, repo_type="dataset")
    expect_status(401, api.upload_file, path_or_fileobj=b"x", path_in_repo="a.txt", repo_id=repo,
                  repo_type="dataset")
    expect_raises(HfHubHTTPError, hf_hub_download, repo, "README.md", repo_type="dataset")
    print("denied")


def read_only(repo):
    api = HfApi()
    assert api.list_repo_files(repo, repo_type="dataset") == []
    expect_status(403, api.create_repo, repo + "-new", repo_type="dataset")
    expect_status(403, api.upload_file, path_or_fileobj=b"hello\n", path_in_repo="a.txt",
                  repo_id=repo, repo_type="dataset")
    assert api.list_repo_files(repo, repo_type="dataset") == []
    print("read only")


def multipart(repo, workdir):
    """A binary file larger than the double's part size goes up in parts (Git LFS multipart)
    and comes back byte for byte."""
    api = HfApi()
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    data = bytes((i * 7 + i // 251) % 256 for i in range(200_000))
    api.upload_file(path_or_fileobj=data, path_in_repo="blob.bin", repo_id=repo, repo_type="dataset")
    got = pathlib.Path(hf_hub_download(repo, "blob.bin", repo_type="dataset", cache_dir=workdir / "cache"))
    assert got.read_bytes() == data, "multipart upload came back different"
    print("multipart")


def main():
    mode, repo = sys.argv[1], sys.argv[2]
    if mode == "round_trip":
        round_trip(repo, pathlib.Path(sys.argv[3]))
    elif mode == "multipart":
        multipart(repo, pathlib.Path(sys.argv[3]))
    elif mode == "denied":
        denied(repo)
    elif mode == "read_only":
        read_only(repo)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
