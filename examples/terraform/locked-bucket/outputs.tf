output "store_url" {
  description = "Pass to tfaudit as --store (or TFAUDIT_STORE)."
  value       = "s3://${aws_s3_bucket.audit.bucket}/${var.store_prefix}"
}

output "kms_key_arn" {
  value = aws_kms_key.audit.arn
}

output "witness_url" {
  description = "Pass to tfaudit as --witness (or TFAUDIT_WITNESS)."
  value       = "s3://${aws_s3_bucket.witness.bucket}/terraform"
}

output "witness_writer_role_arn" {
  description = "CI assumes this role for checkpoints (e.g. through witness-profile)."
  value       = aws_iam_role.witness["writer"].arn
}

output "witness_auditor_role_arn" {
  description = "Auditors assume this role to read checkpoints (tfaudit verify --witness)."
  value       = aws_iam_role.witness["auditor"].arn
}
