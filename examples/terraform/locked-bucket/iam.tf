# Least privilege. The writer can add and read back records, never delete or change locks;
# the auditor can only read. Neither policy names a principal: they attach to your roles.

resource "aws_iam_policy" "writer" {
  name        = "${var.bucket_name}-tfaudit-writer"
  description = "tfaudit run: write-once records, read-back, preflight checks."
  policy = templatefile("${path.module}/policies/writer.json.tftpl", {
    bucket_arn = aws_s3_bucket.audit.arn
    kms_arn    = aws_kms_key.audit.arn
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

resource "aws_iam_role_policy_attachment" "auditor" {
  role       = var.auditor_role_name
  policy_arn = aws_iam_policy.auditor.arn
}
