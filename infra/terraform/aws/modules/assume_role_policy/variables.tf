variable "service" {
  type        = string
  description = "The one service principal that may assume the role, e.g. ec2.amazonaws.com."

  validation {
    condition     = can(regex("^[a-z0-9.-]+\\.amazonaws\\.com$", var.service))
    error_message = "service must be an AWS service principal such as ec2.amazonaws.com."
  }
}
