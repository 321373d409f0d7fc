variable "name" {
  type        = string
  description = "Prefix of every resource name."
}

variable "node_count" {
  type        = number
  description = "Number of GPU nodes; node 0 is the head (Prefect worker, DeepSpeed master)."
  default     = 2

  validation {
    condition     = var.node_count >= 1 && var.node_count <= 64 && floor(var.node_count) == var.node_count
    error_message = "node_count must be a whole number from 1 to 64."
  }
}

variable "instance_type" {
  type        = string
  description = "EC2 GPU instance type with EFA; one of the keys of local.instance_specs (p5.48xlarge: 8 H100)."
  default     = "p5.48xlarge"

  validation {
    condition     = can(regex("^(p4d|p4de|p5|p5e|p5en|g5|g6e)\\.", var.instance_type))
    error_message = "instance_type must be an EFA-capable GPU type (p4d, p4de, p5, p5e, p5en, g5, g6e families)."
  }
}

variable "ami_id" {
  type        = string
  description = "AMI of the nodes; null uses the latest AWS Deep Learning Base OSS Nvidia Driver AMI (Ubuntu 22.04: driver, EFA, Docker, NVIDIA container toolkit)."
  default     = null
}

variable "root_volume_gib" {
  type        = number
  description = "Size of each node's encrypted root volume (images, data cache)."
  default     = 500

  validation {
    condition     = var.root_volume_gib >= 100
    error_message = "root_volume_gib must be at least 100 (the training image alone is ~20 GiB)."
  }
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

  validation {
    condition     = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com/[a-z0-9._/-]+:[A-Za-z0-9._-]+$", var.training_image))
    error_message = "training_image must be a tagged ECR image: ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG (no `latest`-style floating registry)."
  }
}

variable "cluster_ssh_key_parameter" {
  type        = string
  description = "Name of an SSM SecureString holding the private SSH key the nodes use to reach each other (DeepSpeed starts ranks over pdsh/ssh). Created by the operator, so no secret enters Terraform state."

  validation {
    condition     = can(regex("^/[A-Za-z0-9_./-]+$", var.cluster_ssh_key_parameter))
    error_message = "cluster_ssh_key_parameter must be an SSM parameter path such as /llmops/cluster-ssh-key."
  }
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
  default     = "gpu"
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
