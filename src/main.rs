fn main() {
    std::process::exit(unionmount::run_command_line());
}
