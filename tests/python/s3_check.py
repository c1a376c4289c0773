"""The S3 side of tests/checkpoint.rs, through boto3 (the official AWS SDK), against the moto
server the test started (endpoint and keys from the AWS_* environment variables).

    s3_check.py mkbucket BUCKET             creates the bucket
    s3_check.py ls BUCKET PREFIX            one JSON line: {"KEY": size, ...}
    s3_check.py get BUCKET KEY OUT          downloads an object to OUT
    s3_check.py uploads BUCKET              one JSON line: [{"key": KEY, "parts": N}, ...]
                                            for every multipart upload begun, not completed
"""

import json
import sys

import boto3


def main():
    s3 = boto3.client("s3")
    command, bucket = sys.argv[1], sys.argv[2]
    if command == "mkbucket":
        s3.create_bucket(Bucket=bucket)
    elif command == "ls":
        prefix = sys.argv[3]
        objects = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                objects[o["Key"]] = o["Size"]
        print(json.dumps(objects))
    elif command == "get":
        s3.download_file(bucket, sys.argv[3], sys.argv[4])
    elif command == "uploads":
        found = []
        for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            parts = s3.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
            found.append({"key": u["Key"], "parts": len(parts.get("Parts", []))})
        print(json.dumps(found))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
