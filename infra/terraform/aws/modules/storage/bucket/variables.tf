variable "bucket" {
  type        = string
  description = "Globally unique bucket name."
}

variable "log_bucket" {
  type        = string
  description = "Bucket that receives this bucket's access logs."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key of the default encryption."
}

variable "noncurrent_version_days" {
  type        = number
  description = "Days an overwritten or deleted object version is kept."

  validation {
    condition     = var.noncurrent_version_days >= 1
    error_message = "noncurrent_version_days must be at least 1."
  }
}

variable "force_destroy" {
  type        = bool
  description = "Let `terraform destroy` delete the bucket with its objects."
}
