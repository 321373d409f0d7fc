# Inputs the root forwards from its own variables (../../variables.tf) are validated and
# defaulted there, once; only this module's own settings carry defaults and checks here.

variable "name" {
  type        = string
  description = "Prefix of every resource name."
}

variable "vpc_id" {
  type        = string
  description = "VPC of the services."
}

variable "vpc_cidr" {
  type        = string
  description = "The only range allowed to reach MLflow and Prefect."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets (two zones or more, for the RDS subnet group); the services host uses the first."

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids needs at least two subnets in different zones (RDS subnet group)."
  }
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key of the database, its secret, its Performance Insights and the host's volume."
}

variable "mlflow_bucket" {
  type        = string
  description = "Bucket of MLflow's artifacts (clients write there directly)."
}

variable "mlflow_bucket_arn" {
  type        = string
  description = "ARN of the MLflow artifact bucket."
}

variable "instance_type" {
  type        = string
  description = "EC2 type of the host that runs the MLflow and Prefect servers."
}

variable "db_instance_class" {
  type        = string
  description = "RDS PostgreSQL instance class (one instance holds the mlflow and prefect databases)."
}

variable "db_allocated_storage_gib" {
  type        = number
  description = "Initial database storage; it grows automatically up to 10x."
  default     = 50

  validation {
    condition     = var.db_allocated_storage_gib >= 20
    error_message = "db_allocated_storage_gib must be at least 20."
  }
}

variable "db_multi_az" {
  type        = bool
  description = "Standby replica in a second zone (the registry and the flow history survive a zone outage)."
}

variable "db_backup_retention_days" {
  type        = number
  description = "Days of automated database backups."
  default     = 14

  validation {
    condition     = var.db_backup_retention_days >= 7 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be from 7 to 35."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse to delete the database; set false (and apply) before `terraform destroy`."
}

variable "mlflow_version" {
  type        = string
  description = "MLflow server version; match the client pin in pyproject.toml (mlflow>=3.1,<4)."
  default     = "3.1.4"

  validation {
    condition     = can(regex("^3\\.[0-9]+\\.[0-9]+$", var.mlflow_version))
    error_message = "mlflow_version must be a 3.x.y release (the project's client is MLflow 3)."
  }
}

variable "prefect_version" {
  type        = string
  description = "Prefect server version; match the client pin in pyproject.toml (prefect>=3.4,<4)."
  default     = "3.4.25"

  validation {
    condition     = can(regex("^3\\.[0-9]+\\.[0-9]+$", var.prefect_version))
    error_message = "prefect_version must be a 3.x.y release (the project's flows are Prefect 3)."
  }
}
