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
