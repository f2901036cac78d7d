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
  description = "Existing IAM role the apply job assumes (it gets the writer policy and is the only writer of the production stream)."
  type        = string
}

variable "plan_role_name" {
  description = "Existing IAM role pull-request plan jobs assume (it may write the pull-request streams only)."
  type        = string
}

variable "store_prefix" {
  description = "Key prefix of the store URL (s3://BUCKET/<store_prefix>)."
  type        = string
  default     = "terraform"
}

variable "production_stream" {
  description = "The stream the apply job writes (tfaudit's default: the repository slug, e.g. acme/infra)."
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
