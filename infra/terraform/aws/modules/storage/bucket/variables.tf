# Every input comes from ../ (the storage module), which validates noncurrent_version_days.

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
}

variable "force_destroy" {
  type        = bool
  description = "Let `terraform destroy` delete the bucket with its objects."
}
