# Inputs the root forwards from its own variables (../../variables.tf) are validated and
# defaulted there, once; only this module's own settings carry defaults and checks here.

variable "name" {
  type        = string
  description = "Prefix of every resource name (e.g. llmops-prod)."
}

variable "vpc_cidr" {
  type        = string
  description = "Address range of the VPC."
}

variable "availability_zones" {
  type        = list(string)
  description = "Zones of the private subnets; the GPU nodes use the first (a cluster placement group is one zone), RDS spans them all."
}

variable "ssh_ingress_cidr" {
  type        = string
  description = "The only range that may reach the nodes on SSH (a VPN or bastion range). Never 0.0.0.0/0."
}

variable "enable_nat_gateway" {
  type        = bool
  description = "Give the private subnets outbound internet (image and package pulls) through one NAT gateway."
}

variable "flow_log_retention_days" {
  type        = number
  description = "Days to keep VPC flow logs."
  default     = 365

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be a CloudWatch retention of at least a year (365, 400, 545, 731, ...)."
  }
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key that encrypts the flow logs."
}
