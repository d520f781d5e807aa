"""Runs the S3 → Kinesis forwarder exactly as deploy/kinesis/cloudformation.yaml ships it (the
Lambda's inline code, taken from the template, checked against CloudFormation's 4096-character
ZipFile limit and compiled) on one gzip'd access-log file, against the Kinesis endpoint in
AWS_ENDPOINT_URL_KINESIS (kinesalite in the tests). Like the Rust tests' seam, it injects the
partial failure the emulator never produces: the first PutRecords reports every other record
as throttled. Prints the forwarder's stats and every PutRecords call's (records, bytes) as JSON.

Usage: forwarder.py TEMPLATE LOG_GZ
"""

import gzip
import json
import sys
import types

import yaml


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation YAML, whose short-form functions (!Ref, !Sub…) do not matter here."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def main(template_path, log_path):
    with open(template_path) as f:
        template = yaml.load(f, Loader=_CfnLoader)
    code = template["Resources"]["Forwarder"]["Properties"]["Code"]["ZipFile"]
    if len(code) > 4096:
        sys.exit(f"inline code is {len(code)} characters; CloudFormation's ZipFile allows 4096")
    index = types.ModuleType("index")
    exec(compile(code, "index.py", "exec"), index.__dict__)

    real_put = index.kinesis.put_records
    calls = []

    def put_records(StreamName, Records):
        calls.append([len(Records), sum(len(r["Data"]) + len(r["PartitionKey"]) for r in Records)])
        if len(calls) > 1:
            return real_put(StreamName=StreamName, Records=Records)
        kept = real_put(StreamName=StreamName, Records=Records[0::2])["Records"]
        results = []
        for i in range(len(Records)):
            if i % 2 == 0:
                results.append(kept[i // 2])
            else:
                results.append({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "injected"})
        return {"FailedRecordCount": len(Records) // 2, "Records": results}

    index.kinesis.put_records = put_records
    with open(log_path, "rb") as f:
        stats = index.forward(gzip.GzipFile(fileobj=f))
    stats["calls"] = calls
    stats["limits"] = {"max_records": index.MAX_RECORDS, "max_request_bytes": index.MAX_REQUEST_BYTES}
    print(json.dumps(stats))


if __name__ == "__main__":
    main(*sys.argv[1:3])
