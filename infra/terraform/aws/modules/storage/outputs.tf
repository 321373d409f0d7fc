output "dvc_bucket" {
  description = "Bucket of the DVC remote."
  value       = module.dvc.id
}

output "mlflow_bucket" {
  description = "Bucket of MLflow's artifacts."
  value       = module.mlflow.id
}

output "bucket_arns" {
  description = "ARNs of the project's data buckets (the instance profiles are limited to these)."
  value       = [module.dvc.arn, module.mlflow.arn]
}

output "fsx_dns_name" {
  description = "DNS name of the checkpoint file system; empty when enable_fsx is false."
  value       = var.enable_fsx ? aws_fsx_lustre_file_system.checkpoints[0].dns_name : ""
}

output "fsx_mount_name" {
  description = "Lustre mount name of the checkpoint file system; empty when enable_fsx is false."
  value       = var.enable_fsx ? aws_fsx_lustre_file_system.checkpoints[0].mount_name : ""
}
