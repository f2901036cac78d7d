# A WORM bucket for tfaudit records: Object Lock in COMPLIANCE mode (nobody, root included,
# can delete or shorten a locked version), versioning, SSE-KMS, no public access, TLS only.

data "aws_caller_identity" "current" {}

resource "aws_kms_key" "audit" {
  description         = "tfaudit audit records (${var.bucket_name})"
  enable_key_rotation = true
  # The account administers the key; use is granted to the writer and auditor by IAM.
  policy = templatefile("${path.module}/policies/kms-key.json.tftpl", {
    account_id = data.aws_caller_identity.current.account_id
  })
}

resource "aws_s3_bucket" "audit" {
  bucket              = var.bucket_name
  object_lock_enabled = true
}

resource "aws_s3_bucket_ownership_controls" "audit" {
  bucket = aws_s3_bucket.audit.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "audit" {
  bucket                  = aws_s3_bucket.audit.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "audit" {
  bucket = aws_s3_bucket.audit.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "audit" {
  bucket = aws_s3_bucket.audit.id
  rule {
    default_retention {
      mode = "COMPLIANCE"
      days = var.retention_days
    }
  }
  depends_on = [aws_s3_bucket_versioning.audit]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "audit" {
  bucket = aws_s3_bucket.audit.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.audit.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_policy" "audit" {
  bucket = aws_s3_bucket.audit.id
  policy = templatefile("${path.module}/policies/bucket.json.tftpl", {
    bucket_arn = aws_s3_bucket.audit.arn
    # The production stream (its chain and runs): written by the apply role and nobody else.
    production_prefix = "${var.store_prefix}/${var.production_stream}/"
    apply_role_arn    = data.aws_iam_role.apply.arn
  })
  depends_on = [aws_s3_bucket_public_access_block.audit]
}
