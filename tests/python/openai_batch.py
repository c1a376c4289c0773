"""Drives the batch double with the official `openai` client: upload, create with metadata,
poll, read the output and error files, list with pagination, cancel, and a file that fails
validation. Usage: openai_batch.py BASE_URL API_KEY. Prints one JSON line of what it saw."""

import json
import sys
import time

import openai

base_url, api_key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)


def body(text):
    return {"model": "mock-model", "messages": [{"role": "user", "content": text}]}


def jsonl(lines):
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def wait(batch_id, statuses):
    for _ in range(200):
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} stayed {batch.status}")


requests = [
    {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body(f"say {cid}")}
    for cid in ["a", "b", "c"]
]
uploaded = client.files.create(file=("in.jsonl", jsonl(requests)), purpose="batch")
assert uploaded.purpose == "batch" and uploaded.id, uploaded

batch = client.batches.create(
    input_file_id=uploaded.id,
    endpoint="/v1/chat/completions",
    completion_window="24h",
    metadata={"distill_job": "tag-1", "distill_step": "s"},
)
assert batch.status == "validating", batch.status
assert batch.metadata["distill_job"] == "tag-1", batch.metadata
done = wait(batch.id, {"completed"})
assert done.request_counts.total == 3, done.request_counts

answers = {}
for line in client.files.content(done.output_file_id).text.splitlines():
    result = json.loads(line)
    assert result["error"] is None and result["response"]["status_code"] == 200, result
    answers[result["custom_id"]] = result["response"]["body"]["choices"][0]["message"]["content"]
failed = {}
if done.error_file_id:
    for line in client.files.content(done.error_file_id).text.splitlines():
        result = json.loads(line)
        failed[result["custom_id"]] = result["response"]["status_code"]

second = client.batches.create(
    input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
)
listed = [b.id for b in client.batches.list(limit=1)]
cancelling = client.batches.cancel(second.id)
cancelled = wait(second.id, {"cancelled"})

duplicate = [requests[0], requests[0]]
bad_file = client.files.create(file=("bad.jsonl", jsonl(duplicate)), purpose="batch")
bad = client.batches.create(
    input_file_id=bad_file.id, endpoint="/v1/chat/completions", completion_window="24h"
)
bad = wait(bad.id, {"failed"})

try:
    client.batches.retrieve("batch_missing")
    missing = None
except openai.NotFoundError as e:
    missing = e.status_code

print(
    json.dumps(
        {
            "answers": answers,
            "failed": failed,
            "listed": listed,
            "first": batch.id,
            "second": second.id,
            "cancelling": cancelling.status,
            "cancelled": cancelled.status,
            "bad_errors": [e.code for e in bad.errors.data],
            "missing": missing,
        }
    )
)
