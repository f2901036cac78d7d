# The demo's infrastructure: no cloud account needed, only the null provider.
terraform {
  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
}

variable "db_password" {
  type      = string
  sensitive = true
  default   = "demo-password-never-stored"
}

resource "null_resource" "web" {
  count = 2
  triggers = {
    name     = "web-${count.index}"
    password = var.db_password
  }
}

output "web_ids" {
  value = null_resource.web[*].id
}
