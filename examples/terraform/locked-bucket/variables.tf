variable "bucket_name" {
  description = "Name of the audit bucket (globally unique)."
  type        = string
}

variable "retention_days" {
  description = "Default COMPLIANCE retention; tfaudit's --retention-days must not exceed it."
  type        = number
  default     = 365
}

variable "writer_role_name" {
  description = "Existing IAM role CI assumes to run tfaudit (it gets the writer policy)."
  type        = string
}

variable "auditor_role_name" {
  description = "Existing IAM role auditors assume to run `tfaudit verify` (read-only)."
  type        = string
}

variable "witness_bucket_name" {
  description = "Name of the witness bucket (globally unique), in the witness account."
  type        = string
}

variable "witness_admin_role_arn" {
  description = "Role in the witness account (a separate AWS account) that terraform assumes to create the witness bucket and roles."
  type        = string
}

variable "witness_region" {
  description = "Region of the witness bucket."
  type        = string
  default     = "eu-central-1"
}
