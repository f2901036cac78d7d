# Least privilege. The apply role writes the production stream (and may read back any record);
# the plan role of pull requests writes only the pull-request streams (`<prefix>/pr/...`), so
# code in a pull request (a `data "external"` source, a provisioner) cannot add records to the
# production chain; the bucket policy (main.tf) enforces that for every other principal too.
# No role can delete or change a lock; the auditor can only read. The policies name no
# principal: they attach to your roles.

data "aws_iam_role" "apply" {
  name = var.writer_role_name
}

resource "aws_iam_policy" "writer" {
  name        = "${var.bucket_name}-tfaudit-writer"
  description = "tfaudit run (apply role): write-once records, read-back, preflight checks."
  policy = templatefile("${path.module}/policies/writer.json.tftpl", {
    bucket_arn = aws_s3_bucket.audit.arn
    kms_arn    = aws_kms_key.audit.arn
  })
}

resource "aws_iam_policy" "pr_writer" {
  name        = "${var.bucket_name}-tfaudit-pr-writer"
  description = "tfaudit run (pull-request plan role): the pull-request streams only."
  policy = templatefile("${path.module}/policies/pr-writer.json.tftpl", {
    bucket_arn = aws_s3_bucket.audit.arn
    kms_arn    = aws_kms_key.audit.arn
    pr_prefix  = "${var.store_prefix}/pr/"
  })
}

resource "aws_iam_policy" "auditor" {
  name        = "${var.bucket_name}-tfaudit-auditor"
  description = "tfaudit verify: read-only."
  policy = templatefile("${path.module}/policies/auditor.json.tftpl", {
    bucket_arn = aws_s3_bucket.audit.arn
    kms_arn    = aws_kms_key.audit.arn
  })
}

resource "aws_iam_role_policy_attachment" "writer" {
  role       = var.writer_role_name
  policy_arn = aws_iam_policy.writer.arn
}

resource "aws_iam_role_policy_attachment" "pr_writer" {
  role       = var.plan_role_name
  policy_arn = aws_iam_policy.pr_writer.arn
}

resource "aws_iam_role_policy_attachment" "auditor" {
  role       = var.auditor_role_name
  policy_arn = aws_iam_policy.auditor.arn
}
