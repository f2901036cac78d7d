"""`make demo`: the main job end to end on an embedded default, no cloud account needed.

A local S3 server (moto, on 127.0.0.1) with an Object-Lock COMPLIANCE bucket; the real
terraform runs `plan` then `apply` on examples/demo through `tfaudit run`; the chain records
are printed; deleting the stored log is shown to be refused; `tfaudit verify` passes, then
fails on a scratch copy of the trail in which one record was tampered with; `tfaudit log`
lists the runs and `tfaudit report` writes the evidence pack, whose path it prints.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devkit.servers import make_lock_bucket, start_moto  # noqa: E402
from devkit.tfhelpers import isolated_env, terraform_binaries, tf_init  # noqa: E402

BUCKET = "tfaudit-demo"
STREAM = "demo/infra"


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def tfaudit(args: list[str], env: dict[str, str], cwd: Path) -> int:
    print("$ tfaudit " + " ".join(args), flush=True)
    return subprocess.run([sys.executable, "-m", "tfaudit_ci", *args], env=env, cwd=cwd).returncode


def main() -> int:
    demo = REPO / ".demo"
    shutil.rmtree(demo, ignore_errors=True)
    demo.mkdir()
    step("starting a local S3 server (moto) with an Object-Lock COMPLIANCE bucket")
    server = start_moto(demo / "moto")
    try:
        client = server.client()
        make_lock_bucket(client, BUCKET, mode="COMPLIANCE", days=365)
        print(f"endpoint {server.endpoint}, bucket {BUCKET}: versioning + Object Lock, 365 days")

        version, terraform = terraform_binaries()[-1]
        env = {
            **isolated_env(demo / "env"),
            **server.env(),
            "TFAUDIT_WORK_DIR": str(demo / "spools"),
            "PATH": f"{terraform.parent}:" + isolated_env(demo / "env")["PATH"],
        }
        work = demo / "tf"
        shutil.copytree(REPO / "examples" / "demo", work)
        step(f"terraform {version}: init (offline, local provider mirror)")
        tf_init(terraform, work, env)
        store = f"s3://{BUCKET}/audit"
        common = ["--store", store, "--stream", STREAM]

        step("preflight: is the bucket really locked?")
        if tfaudit(["check", *common], env, work) != 0:
            return 1
        step("tfaudit run -- terraform plan -out=tfplan")
        code = tfaudit(
            [
                "run",
                *common,
                "--",
                str(terraform),
                "plan",
                "-input=false",
                "-out=tfplan",
                "-detailed-exitcode",
            ],
            env,
            work,
        )
        if code not in (0, 2):
            return code
        step("tfaudit run -- terraform apply tfplan")
        if (
            tfaudit(
                ["run", *common, "--", str(terraform), "apply", "-input=false", "tfplan"], env, work
            )
            != 0
        ):
            return 1

        step("the chain records (oldest version of each slot)")
        listing = client.list_object_versions(Bucket=BUCKET, Prefix=f"audit/{STREAM}/chain/")
        oldest = {v["Key"]: v["VersionId"] for v in listing.get("Versions", [])}
        records = []
        for key in sorted(oldest):
            body = client.get_object(Bucket=BUCKET, Key=key, VersionId=oldest[key])["Body"].read()
            records.append(json.loads(body))
            print(f"--- {key}")
            print(json.dumps(json.loads(body), indent=2, sort_keys=True))

        step("trying to delete the stored log of the apply (as the writer would)")
        log = next(a for a in records[-1]["artifacts"] if a["name"] == "output.log")
        try:
            client.delete_object(
                Bucket=BUCKET, Key=f"audit/{log['key']}", VersionId=log["version_id"]
            )
        except Exception as exc:  # the refusal is the point of the demo
            print(f"refused, as it must be: {exc}")
        else:
            print("ERROR: the delete was accepted: the bucket is not WORM")
            return 1

        code = verify_steps(env, work, store)
        return code if code != 0 else read_steps(env, work, store)
    finally:
        server.stop()


def verify_steps(env: dict[str, str], work: Path, store: str) -> int:
    """`tfaudit verify` passes on the demo stream, then fails on a tampered scratch copy."""
    import boto3

    from devkit.filestore import copy_s3_trail
    from tfaudit_ci.canonical import canonical_bytes

    step("tfaudit verify: the trail is whole")
    if tfaudit(["verify", "--store", store, "--stream", STREAM], env, work) != 0:
        return 1

    step("copying every version of the trail into a scratch file:// store")
    bucket, _, prefix = store.removeprefix("s3://").partition("/")
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    scratch = REPO / ".demo" / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    copy = copy_s3_trail(client, bucket, prefix, scratch)
    if tfaudit(["verify", "--store", copy.uri, "--stream", STREAM], env, work) != 0:
        return 1  # the copy keeps version ids, so it verifies like the original

    step("tampering: the plan's record is rewritten in the copy to say nothing changes")
    record_path = scratch / STREAM / "chain" / f"{0:012d}.json"
    record = json.loads(record_path.read_bytes())
    record["exit_code"] = 0
    record["plan"] = {**(record.get("plan") or {}), "summary": {"add": 0, "change": 0}}
    record_path.chmod(0o644)
    record_path.write_bytes(canonical_bytes(record))
    print(f"rewrote {record_path.relative_to(REPO)}")
    bad = tfaudit(["verify", "--store", copy.uri, "--stream", STREAM], env, work)
    print(f"verify on the tampered copy exited {bad} (24 = a problem was found)")
    return 0 if bad == 24 else 1


def read_steps(env: dict[str, str], work: Path, store: str) -> int:
    """Reading the trail back: the runs, newest first, and the evidence pack for auditors."""
    common = ["--store", store, "--stream", STREAM]
    step("tfaudit log: who ran what, newest first")
    if tfaudit(["log", *common], env, work) != 0:
        return 1
    step("tfaudit report: the evidence pack (one self-contained HTML file)")
    report = REPO / ".demo" / "report.html"
    if tfaudit(["report", *common, "--out", str(report)], env, work) != 0:
        return 1
    print(f"report written: {report} (open it in a browser; it prints cleanly to PDF)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
