output "private_ips" {
  description = "Private IPv4 address of each node, node 0 first."
  value       = aws_instance.node[*].private_ip
}

output "hostnames" {
  description = "Private DNS name of each node, node 0 first (the DeepSpeed hostfile's hosts)."
  value       = aws_instance.node[*].private_dns
}

output "gpus_per_node" {
  description = "GPUs of one node (DeepSpeed ranks per node)."
  value       = local.spec.gpus
}

output "efa_interfaces_per_node" {
  description = "EFA interfaces of one node (0: the job uses TCP sockets)."
  value       = local.spec.efa_interfaces
}

output "role_name" {
  description = "IAM role of the nodes."
  value       = aws_iam_role.node.name
}
