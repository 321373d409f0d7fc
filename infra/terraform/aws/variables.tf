variable "name" {
  type        = string
  description = "Prefix of every resource name and the Project tag (lowercase letters, digits, dashes)."
  default     = "llmops"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2-21 lowercase letters, digits or dashes, starting with a letter (it is part of bucket names)."
  }
}

variable "region" {
  type        = string
  description = "AWS region (pick one with capacity of instance_type, e.g. us-east-1 for p5)."
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1."
  }
}

variable "availability_zones" {
  type        = list(string)
  description = "Zones for the private subnets; the GPU nodes (one placement group) go in the first."
  default     = ["us-east-1a", "us-east-1b"]

  validation {
    condition     = length(var.availability_zones) >= 2
    error_message = "availability_zones needs at least two zones (the RDS subnet group spans two)."
  }
}

variable "vpc_cidr" {
  type        = string
  description = "Address range of the VPC."
  default     = "10.42.0.0/16"

  validation {
    # /20 or larger: the private subnets are /24 slices of it (cidrsubnet(vpc_cidr, 4, i)).
    condition     = can(cidrhost(var.vpc_cidr, 0)) && try(tonumber(split("/", var.vpc_cidr)[1]) <= 20, false)
    error_message = "vpc_cidr must be a CIDR block of /20 or larger (room for the subnets), such as 10.42.0.0/16."
  }
}

variable "ssh_ingress_cidr" {
  type        = string
  description = "The only range allowed to SSH to the nodes (your VPN or bastion). Required; never 0.0.0.0/0."

  validation {
    condition     = can(cidrhost(var.ssh_ingress_cidr, 0)) && !contains(["0.0.0.0/0", "::/0"], var.ssh_ingress_cidr)
    error_message = "ssh_ingress_cidr must be a CIDR block narrower than the whole internet, e.g. 10.8.0.0/16."
  }
}

variable "enable_nat_gateway" {
  type        = bool
  description = "Outbound internet for the private subnets through one NAT gateway (package and image pulls)."
  default     = true
}

variable "node_count" {
  type        = number
  description = "GPU nodes (params.yaml cluster.nodes); node 0 is the head."
  default     = 2

  validation {
    condition     = var.node_count >= 1 && var.node_count <= 64 && floor(var.node_count) == var.node_count
    error_message = "node_count must be a whole number from 1 to 64."
  }
}

variable "instance_type" {
  type        = string
  description = "GPU instance type with EFA (p5.48xlarge: 8 x H100 80 GB, 32 EFA interfaces)."
  default     = "p5.48xlarge"

  validation {
    condition     = can(regex("^(p4d|p4de|p5|p5e|p5en|g5|g6e)\\.", var.instance_type))
    error_message = "instance_type must be an EFA-capable GPU type (p4d, p4de, p5, p5e, p5en, g5, g6e)."
  }
}

variable "ami_id" {
  type        = string
  description = "GPU node AMI; null: the latest AWS Deep Learning Base OSS Nvidia Driver AMI (Ubuntu 22.04)."
  default     = null
}

variable "root_volume_gib" {
  type        = number
  description = "Encrypted root volume of each GPU node."
  default     = 500

  validation {
    condition     = var.root_volume_gib >= 100
    error_message = "root_volume_gib must be at least 100 (the training image alone is ~20 GiB)."
  }
}

variable "training_image" {
  type        = string
  description = "Training image in ECR (built from infra/docker/train.Dockerfile), ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG."

  validation {
    condition     = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com/[a-z0-9._/-]+:[A-Za-z0-9._-]+$", var.training_image))
    error_message = "training_image must be a tagged ECR image: ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG."
  }
}

variable "cluster_ssh_key_parameter" {
  type        = string
  description = "SSM SecureString with the nodes' shared private SSH key (for DeepSpeed's pdsh); create it before apply."
  default     = "/llmops/cluster-ssh-key"

  validation {
    condition     = can(regex("^/[A-Za-z0-9_./-]+$", var.cluster_ssh_key_parameter))
    error_message = "cluster_ssh_key_parameter must be an SSM parameter path such as /llmops/cluster-ssh-key."
  }
}

variable "work_pool" {
  type        = string
  description = "Prefect work pool served by the head node's process worker (prefect.yaml: pretrain-cluster)."
  default     = "gpu"
}

variable "enable_fsx" {
  type        = bool
  description = "FSx for Lustre for checkpoints, mounted at /fsx on every node (else checkpoints stay on each node's disk)."
  default     = false
}

variable "fsx_storage_capacity_gib" {
  type        = number
  description = "FSx for Lustre capacity (1200 or a multiple of 2400 GiB)."
  default     = 1200

  validation {
    condition     = var.fsx_storage_capacity_gib == 1200 || var.fsx_storage_capacity_gib % 2400 == 0
    error_message = "fsx_storage_capacity_gib must be 1200 or a multiple of 2400 (PERSISTENT_2)."
  }
}

variable "force_destroy_buckets" {
  type        = bool
  description = "Let `terraform destroy` delete non-empty buckets (only for throwaway clusters)."
  default     = false
}

variable "services_instance_type" {
  type        = string
  description = "EC2 type of the MLflow + Prefect host."
  default     = "m7i.xlarge"
}

variable "db_instance_class" {
  type        = string
  description = "RDS PostgreSQL class for the MLflow and Prefect databases."
  default     = "db.m7g.large"

  validation {
    condition     = startswith(var.db_instance_class, "db.")
    error_message = "db_instance_class must be an RDS class such as db.m7g.large."
  }
}

variable "db_multi_az" {
  type        = bool
  description = "Multi-AZ standby for the database."
  default     = true
}

variable "deletion_protection" {
  type        = bool
  description = "Protect the database from deletion; set false and apply before `terraform destroy`."
  default     = true
}

variable "tags" {
  type        = map(string)
  description = "Extra tags on every resource (cost centre, owner)."
  default     = {}
}
