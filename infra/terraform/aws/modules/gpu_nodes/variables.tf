# Inputs the root forwards from its own variables (../../variables.tf) are validated and
# defaulted there, once; only this module's own settings carry defaults and checks here.

variable "name" {
  type        = string
  description = "Prefix of every resource name."
}

variable "node_count" {
  type        = number
  description = "Number of GPU nodes; node 0 is the head (Prefect worker, DeepSpeed master)."
}

variable "instance_type" {
  type        = string
  description = "EC2 GPU instance type with EFA; one of the keys of local.instance_specs (p5.48xlarge: 8 H100)."
}

variable "ami_id" {
  type        = string
  description = "AMI of the nodes; null uses the latest AWS Deep Learning Base OSS Nvidia Driver AMI (Ubuntu 22.04: driver, EFA, Docker, NVIDIA container toolkit)."
}

variable "root_volume_gib" {
  type        = number
  description = "Size of each node's encrypted root volume (images, data cache)."
}

variable "subnet_id" {
  type        = string
  description = "Private subnet of the nodes (one zone: a cluster placement group cannot span zones)."
}

variable "security_group_id" {
  type        = string
  description = "Security group allowing all traffic between the nodes."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key of the volumes and of the buckets the nodes read and write."
}

variable "bucket_arns" {
  type        = list(string)
  description = "The project's buckets; the nodes' instance profile may touch these and nothing else in S3."
}

variable "training_image" {
  type        = string
  description = "Training image (infra/docker/train.Dockerfile) in ECR, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/llmops-train:0.1.0."
}

variable "cluster_ssh_key_parameter" {
  type        = string
  description = "Name of an SSM SecureString holding the private SSH key the nodes use to reach each other (DeepSpeed starts ranks over pdsh/ssh). Created by the operator, so no secret enters Terraform state."
}

variable "mlflow_tracking_uri" {
  type        = string
  description = "MLflow tracking server the training containers log to."
}

variable "prefect_api_url" {
  type        = string
  description = "Prefect server the head node's worker polls."
}

variable "work_pool" {
  type        = string
  description = "Prefect work pool the head node's process worker serves."
}

variable "fsx_dns_name" {
  type        = string
  description = "FSx for Lustre DNS name to mount at /fsx for checkpoints; empty: none."
  default     = ""
}

variable "fsx_mount_name" {
  type        = string
  description = "FSx for Lustre mount name; empty: none."
  default     = ""
}
