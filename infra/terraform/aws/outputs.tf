# Read by `llmops launch render --from-terraform out.json` (components/training/terraform_output.py
# lists the keys it needs; a test checks they are all here).

output "node_count" {
  description = "Number of GPU nodes (params.yaml cluster.nodes)."
  value       = var.node_count
}

output "node_hostnames" {
  description = "Private DNS name of each GPU node, head first (params.yaml cluster.hosts, the hostfile)."
  value       = module.gpu_nodes.hostnames
}

output "node_private_ips" {
  description = "Private IPv4 address of each GPU node, head first."
  value       = module.gpu_nodes.private_ips
}

output "gpus_per_node" {
  description = "GPUs per node (params.yaml cluster.ranks_per_node, hostfile slots)."
  value       = module.gpu_nodes.gpus_per_node
}

output "efa_interfaces_per_node" {
  description = "EFA interfaces per node; above 0 the launch sets the EFA variables for NCCL."
  value       = module.gpu_nodes.efa_interfaces_per_node
}

output "instance_type" {
  description = "EC2 type of the GPU nodes."
  value       = var.instance_type
}

output "dvc_bucket" {
  description = "Bucket of the DVC remote (s3://<bucket>/dvc)."
  value       = module.storage.dvc_bucket
}

output "mlflow_artifact_bucket" {
  description = "Bucket of MLflow's artifacts."
  value       = module.storage.mlflow_bucket
}

output "mlflow_tracking_uri" {
  description = "MLflow tracking server, reachable inside the VPC only."
  value       = module.services.mlflow_tracking_uri
}

output "prefect_api_url" {
  description = "Prefect API, reachable inside the VPC only."
  value       = module.services.prefect_api_url
}

output "checkpoint_dir" {
  description = "Shared checkpoint directory on every node (FSx for Lustre), or empty when enable_fsx is false."
  value       = var.enable_fsx ? "/fsx/checkpoints" : ""
}

output "work_pool" {
  description = "Prefect work pool served by the head node."
  value       = var.work_pool
}
