fn main() {
    println!("kubeup-operator {}", env!("CARGO_PKG_VERSION"));
}
