# Shared by the launch scripts (sourced): quoting and dry-run execution.

# Shell-quotes words only where needed (readable dry runs, safe remote commands).
quote() {
  local out=() w
  for w in "$@"; do
    if [[ "$w" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      out+=("$w")
    else
      out+=("'${w//\'/\'\\\'\'}'")
    fi
  done
  echo "${out[*]}"
}

# Runs a command, or prints it when $dry_run is 1.
run() {
  if [[ ${dry_run:-0} == 1 ]]; then
    quote "$@"
  else
    "$@"
  fi
}
