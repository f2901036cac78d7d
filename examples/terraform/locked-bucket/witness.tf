# The independent witness (docs/witness.md): a second WORM bucket, in ANOTHER AWS account,
# that holds a small signed checkpoint of every record. Whoever controls the audit account
# (its root user included) cannot truncate, rewrite or re-create the trail without the
# checkpoints here disagreeing. Nothing in the audit account can change or delete them.
#
# The writer can only create checkpoints: PutObject under checkpoints/ with If-None-Match
# (create-only; the bucket policy refuses any other write), never delete, never change a
# lock. CI reaches it by assuming the witness writer role, e.g. with an AWS profile:
#
#   [profile tfaudit-witness]
#   role_arn = <witness_writer_role_arn output>
#   credential_source = Environment
#
# and `witness: <witness_url output>`, `witness-profile: tfaudit-witness` in .tfaudit.yml.

provider "aws" {
  alias  = "witness"
  region = var.witness_region
  # Terraform itself administers the witness account through this role.
  assume_role {
    role_arn = var.witness_admin_role_arn
  }
}

data "aws_iam_role" "writer" {
  name = var.writer_role_name
}

data "aws_iam_role" "auditor" {
  name = var.auditor_role_name
}

resource "aws_s3_bucket" "witness" {
  provider            = aws.witness
  bucket              = var.witness_bucket_name
  object_lock_enabled = true
}

resource "aws_s3_bucket_ownership_controls" "witness" {
  provider = aws.witness
  bucket   = aws_s3_bucket.witness.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "witness" {
  provider                = aws.witness
  bucket                  = aws_s3_bucket.witness.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "witness" {
  provider = aws.witness
  bucket   = aws_s3_bucket.witness.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "witness" {
  provider = aws.witness
  bucket   = aws_s3_bucket.witness.id
  rule {
    default_retention {
      mode = "COMPLIANCE"
      days = var.retention_days
    }
  }
  depends_on = [aws_s3_bucket_versioning.witness]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "witness" {
  provider = aws.witness
  bucket   = aws_s3_bucket.witness.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256" # checkpoints hold hashes only; no cross-account key needed
    }
  }
}

resource "aws_s3_bucket_policy" "witness" {
  provider = aws.witness
  bucket   = aws_s3_bucket.witness.id
  policy = templatefile("${path.module}/policies/witness-bucket.json.tftpl", {
    bucket_arn = aws_s3_bucket.witness.arn
  })
  depends_on = [aws_s3_bucket_public_access_block.witness]
}

# Roles in the witness account, each assumable only by its counterpart in the audit account,
# which may assume it and do nothing more there.

locals {
  witness_roles = {
    writer = {
      audit_role = data.aws_iam_role.writer
      policy = templatefile("${path.module}/policies/witness-writer.json.tftpl", {
        bucket_arn = aws_s3_bucket.witness.arn
      })
    }
    auditor = {
      audit_role = data.aws_iam_role.auditor
      policy = templatefile("${path.module}/policies/witness-auditor.json.tftpl", {
        bucket_arn = aws_s3_bucket.witness.arn
      })
    }
  }
}

resource "aws_iam_role" "witness" {
  for_each = local.witness_roles
  provider = aws.witness
  name     = "${var.witness_bucket_name}-${each.key}"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { AWS = each.value.audit_role.arn }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy" "witness" {
  for_each = local.witness_roles
  provider = aws.witness
  name     = "tfaudit-witness-${each.key}"
  role     = aws_iam_role.witness[each.key].id
  policy   = each.value.policy
}

resource "aws_iam_role_policy" "assume_witness" {
  for_each = local.witness_roles
  name     = "tfaudit-assume-witness-${each.key}"
  role     = each.value.audit_role.name
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = "sts:AssumeRole"
      Resource = aws_iam_role.witness[each.key].arn
    }]
  })
}
