variable "name" {
  type        = string
  description = "Prefix of every resource name (e.g. llmops-prod)."
}

variable "vpc_cidr" {
  type        = string
  description = "Address range of the VPC."
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && try(tonumber(split("/", var.vpc_cidr)[1]) <= 20, false)
    error_message = "vpc_cidr must be a CIDR block of /20 or larger (room for the subnets)."
  }
}

variable "availability_zones" {
  type        = list(string)
  description = "Zones of the private subnets; the GPU nodes use the first (a cluster placement group is one zone), RDS spans them all."

  validation {
    condition     = length(var.availability_zones) >= 2
    error_message = "Give at least two availability zones: an RDS subnet group needs two."
  }
}

variable "ssh_ingress_cidr" {
  type        = string
  description = "The only range that may reach the nodes on SSH (a VPN or bastion range). Never 0.0.0.0/0."

  validation {
    condition     = can(cidrhost(var.ssh_ingress_cidr, 0)) && !contains(["0.0.0.0/0", "::/0"], var.ssh_ingress_cidr)
    error_message = "ssh_ingress_cidr must be a CIDR block narrower than the whole internet (e.g. your VPN's 10.8.0.0/16)."
  }
}

variable "enable_nat_gateway" {
  type        = bool
  description = "Give the private subnets outbound internet (image and package pulls) through one NAT gateway."
  default     = true
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
