# Inputs the root forwards from its own variables (../../variables.tf) are validated and
# defaulted there, once; only this module's own settings carry defaults and checks here.

variable "name" {
  type        = string
  description = "Prefix of every resource name; bucket names are <name>-<purpose>-<account id>."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key that encrypts the buckets and the file system."
}

variable "noncurrent_version_days" {
  type        = number
  description = "Days an overwritten or deleted object version is kept before it expires."
  default     = 90

  validation {
    condition     = var.noncurrent_version_days >= 1
    error_message = "noncurrent_version_days must be at least 1."
  }
}

variable "force_destroy" {
  type        = bool
  description = "Let `terraform destroy` delete non-empty buckets (data loss: only for throwaway clusters)."
}

variable "enable_fsx" {
  type        = bool
  description = "Create an FSx for Lustre file system for checkpoints, mounted on every GPU node."
}

variable "fsx_storage_capacity_gib" {
  type        = number
  description = "FSx for Lustre capacity (PERSISTENT_2: 1200 GiB or a multiple of 2400 GiB)."
}

variable "fsx_throughput_per_tib" {
  type        = number
  description = "FSx for Lustre throughput in MB/s per TiB (checkpoint write speed)."
  default     = 250

  validation {
    condition     = contains([125, 250, 500, 1000], var.fsx_throughput_per_tib)
    error_message = "fsx_throughput_per_tib must be one of 125, 250, 500, 1000."
  }
}

variable "subnet_id" {
  type        = string
  description = "Subnet of the file system (the GPU nodes' subnet: Lustre traffic stays in one zone)."
}

variable "vpc_id" {
  type        = string
  description = "VPC of the file system's security group."
}

variable "client_security_group_id" {
  type        = string
  description = "Security group of the GPU nodes, the only Lustre clients."
}
