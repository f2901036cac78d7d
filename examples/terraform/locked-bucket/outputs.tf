output "store_url" {
  description = "Pass to tfaudit as --store (or TFAUDIT_STORE)."
  value       = "s3://${aws_s3_bucket.audit.bucket}/${var.store_prefix}"
}

output "kms_key_arn" {
  value = aws_kms_key.audit.arn
}
