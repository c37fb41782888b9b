#!/usr/bin/env bash
# misp_sighting_script.bash: Flowmon ADS custom script -> misp-ndr sightings.
#
# Drop-in replacement of the seed script of the same name. ADS runs it with the script's
# parameters as `--name value` pairs and the batch of BLACKLIST events (tab-separated or
# JSON lines) on standard input. The batch is saved to a spool file first, then posted to
# <webhook_url>/hooks/sightings, where misp-ndr turns it into a run of the sightings flow
# (hits on MISP-sourced blacklists become MISP sightings). The MISP credentials now live on
# the misp-ndr side: misp_server and misp_api_key are accepted and never sent.
#
# Exit codes: 0 accepted (or empty batch); 1 not delivered now (receiver unreachable, TLS
# failure, 5xx such as Prefect down): batch kept, resend it as is; 2 bad parameters, or the
# receiver refused the batch (4xx other than 401): batch kept, fix and resend; 3 the
# receiver refused the token (401): batch kept. See sensors/README.md.
set -euo pipefail
umask 077

# ---- what this script forwards (the rest is the same in misp_integration_script.bash) --
readonly JOB=sightings
readonly FIXED_QUERY='source=flowmon-stdin'
# seed parameter -> query parameter of POST /hooks/sightings
declare -rA FORWARDED=([source]=source_name [timezone]=timezone)
# seed parameters misp-ndr reads from its own settings now: accepted, never sent
declare -rA IGNORED=([misp_server]=MISP_NDR_MISP__URL [misp_api_key]=MISP_NDR_MISP__API_KEY)
readonly REPEATABLE=' '
# ---- end of the script-specific part ---------------------------------------------------

readonly SCRIPT=${0##*/}
readonly OWN=' webhook_url webhook_token webhook_token_file ca_file insecure '
spool_dir=${MISP_NDR_SENSOR_SPOOL:-/var/tmp/misp-ndr-sensor}
retries=${MISP_NDR_SENSOR_RETRIES:-3}
retry_delay=${MISP_NDR_SENSOR_RETRY_DELAY:-2}
max_time=${MISP_NDR_SENSOR_MAX_TIME:-60}
connect_timeout=${MISP_NDR_SENSOR_CONNECT_TIMEOUT:-10}

say() { printf '%s: %s\n' "$SCRIPT" "$*" >&2; }

urlencode() {  # RFC 3986 percent-encoding of every byte but the unreserved ones
  local LC_ALL=C
  local text=$1 encoded='' char i
  for ((i = 0; i < ${#text}; i++)); do
    char=${text:i:1}
    case $char in
      [A-Za-z0-9.~_-]) encoded+=$char ;;
      *) printf -v char '%%%02X' "'$char"; encoded+=$char ;;
    esac
  done
  printf '%s' "$encoded"
}

config_quote() {  # a value inside double quotes of a curl config file
  local text=${1//\\/\\\\}
  printf '"%s"' "${text//\"/\\\"}"
}

known_parameters() {
  local names
  # shellcheck disable=SC2086  # OWN is a list of words
  names=$(printf -- '--%s\n' "${!FORWARDED[@]}" "${!IGNORED[@]}" $OWN | sort | tr '\n' ' ')
  printf '%s' "${names% }"
}

# ---- parameters ------------------------------------------------------------------------
errors=()
query=$FIXED_QUERY
webhook_url='' webhook_token='' token_file='' ca_file='' insecure=0
declare -A seen=()
position=0
while (($#)); do
  arg=$1
  shift
  position=$((position + 1))
  case $arg in
    --*=*) name=${arg%%=*} name=${name#--} value=${arg#*=} given=1 ;;
    --*) name=${arg#--} value='' given=0 ;;
    *) errors+=("argument $position is not a --name (parameters are --name value pairs)")
       continue ;;
  esac
  if [[ ! $name =~ ^[A-Za-z0-9_-]+$ ]]; then
    errors+=("argument $position is not a valid parameter name")
    continue
  fi
  known=0
  [[ -n ${FORWARDED[$name]+set} || -n ${IGNORED[$name]+set} || $OWN == *" $name "* ]] && known=1
  if ((!known)); then
    errors+=("unknown parameter --$name")
    # skip its value, if it has one
    if ((!given)) && (($#)) && [[ $1 != --* ]]; then shift; position=$((position + 1)); fi
    continue
  fi
  if [[ -n ${seen[$name]+set} && $REPEATABLE != *" $name "* ]]; then
    errors+=("--$name given more than once")
  fi
  seen[$name]=1
  if [[ $name == insecure ]]; then  # a flag; ADS may still hand it a value
    if ((!given)) && (($#)) && [[ $1 != --* ]]; then
      value=$1 given=1
      shift
      position=$((position + 1))
    fi
    ((given)) || value=1
    case ${value,,} in
      1 | true | yes | on) insecure=1 ;;
      0 | false | no | off | '') insecure=0 ;;
      *) errors+=("--insecure takes no value, or 1/0, true/false, yes/no") ;;
    esac
    continue
  fi
  if ((!given)); then
    if (($#)); then
      value=$1
      shift
      position=$((position + 1))
    else
      errors+=("--$name needs a value")
      continue
    fi
  fi
  if [[ -n ${IGNORED[$name]+set} ]]; then
    say "ignoring --$name: misp-ndr reads ${IGNORED[$name]} on its side; the value is not sent"
    value=''
    continue
  fi
  case $name in
    webhook_url) webhook_url=$value ;;
    webhook_token) webhook_token=$value ;;
    webhook_token_file) token_file=$value ;;
    ca_file) ca_file=$value ;;
    *) [[ -n $value ]] && query+="&${FORWARDED[$name]}=$(urlencode "$value")" ;;
  esac
  value=''
done
unset value arg

if [[ -z $webhook_url ]]; then
  errors+=("--webhook_url is required (the misp-ndr receiver, e.g. https://misp-ndr.example.org:8181)")
elif [[ ! $webhook_url =~ ^https?://[^/?#@[:space:]]+(/[^?#[:space:]]*)?$ ]]; then
  errors+=("--webhook_url must be http(s)://host[:port][/path], without user, query or spaces")
fi
webhook_url=${webhook_url%/}

if [[ -n $webhook_token && -n $token_file ]]; then
  errors+=("give --webhook_token or --webhook_token_file, not both")
elif [[ -n $token_file ]]; then
  if [[ ! -f $token_file || ! -r $token_file ]]; then
    errors+=("--webhook_token_file $token_file is not a readable file")
  else
    IFS= read -r webhook_token <"$token_file" || true
    webhook_token=${webhook_token%"${webhook_token##*[![:space:]]}"}  # trailing CR, spaces
    webhook_token=${webhook_token#"${webhook_token%%[![:space:]]*}"}
    if ((8#$(stat -L -c %a -- "$token_file") & 8#007)); then
      say "warning: $token_file is open to every user: chmod o-rwx it"
    fi
  fi
  [[ -n $webhook_token ]] || errors+=("--webhook_token_file $token_file is empty")
elif [[ -z $webhook_token ]]; then
  errors+=("--webhook_token_file (recommended) or --webhook_token is required")
fi
if [[ $webhook_token =~ [[:cntrl:][:space:]] ]]; then
  errors+=("the webhook token contains spaces or control characters")
fi

if [[ -n $ca_file && ! -r $ca_file ]]; then
  errors+=("--ca_file $ca_file is not a readable file")
fi
if [[ -n $ca_file ]] && ((insecure)); then
  errors+=("--ca_file and --insecure contradict each other: choose one")
fi
for number in retries retry_delay max_time connect_timeout; do
  [[ ${!number} =~ ^[0-9]+$ ]] || errors+=("MISP_NDR_SENSOR_${number^^} must be a whole number")
done

# ---- keep the batch --------------------------------------------------------------------
if ! mkdir -p -- "$spool_dir" || ! chmod 700 -- "$spool_dir"; then
  say "cannot use the spool directory $spool_dir (MISP_NDR_SENSOR_SPOOL): nothing sent"
  for error in ${errors[@]+"${errors[@]}"}; do say "$error"; done
  exit 1
fi
spool_dir=$(cd -- "$spool_dir" && pwd -P)

spool_file=''
if [[ ! -t 0 ]]; then
  stdin_path=$(readlink -f /dev/stdin 2>/dev/null || true)
  if [[ -f $stdin_path && ${stdin_path%/*} == "$spool_dir" && ${stdin_path##*/} == "$JOB".* ]]
  then
    spool_file=$stdin_path  # a kept batch being resent: removed once accepted
  else
    spool_file=$(mktemp -- "$spool_dir/$JOB.$(date -u +%Y%m%dT%H%M%SZ).XXXXXXXX")
    if ! cat >"$spool_file"; then
      say "could not save the batch to $spool_file (disk full?): nothing sent"
      exit 1
    fi
  fi
fi

kept() {
  say "batch kept in $spool_file; resend it: run this script again with the same" \
      "parameters and < $spool_file"
}

if ((${#errors[@]})); then
  for error in "${errors[@]}"; do say "$error"; done
  say "known parameters: $(known_parameters)"
  if [[ -s $spool_file ]]; then kept; elif [[ -n $spool_file ]]; then rm -f -- "$spool_file"; fi
  exit 2
fi
if [[ -z $spool_file ]]; then
  say "the batch is read from standard input"
  exit 2
fi
if [[ $(tr -d '[:space:]' <"$spool_file" | head -c 1 | wc -c) -eq 0 ]]; then
  say "empty batch: nothing sent"
  rm -f -- "$spool_file"
  exit 0
fi

# ---- send ------------------------------------------------------------------------------
if ((insecure)); then
  say "warning: --insecure: the receiver's TLS certificate is not verified;" \
      "anyone on the path can read the token"
elif [[ $webhook_url == http://* &&
        ! $webhook_url =~ ^http://(127\.[0-9.]+|localhost|\[::1\])(:[0-9]+)?(/|$) ]]; then
  say "warning: plain http: the token and the batch cross the network unencrypted"
fi

curl_config() {  # read by curl from a pipe: the token never is on a command line
  printf 'header = %s\n' "$(config_quote "Authorization: Bearer $webhook_token")"
  if [[ -n $ca_file ]]; then printf 'cacert = %s\n' "$(config_quote "$ca_file")"; fi
  if ((insecure)); then printf 'insecure\n'; fi
}

response_file=$(mktemp -- "$spool_dir/.answer.XXXXXXXX")
errors_file=$(mktemp -- "$spool_dir/.curl-errors.XXXXXXXX")
trap 'rm -f -- "$response_file" "$errors_file"' EXIT
url="$webhook_url/hooks/$JOB?$query"

attempt=0 delay=$retry_delay
while :; do
  curl_rc=0
  http_code=$(curl --silent --show-error --proto '=http,https' \
    --connect-timeout "$connect_timeout" --max-time "$max_time" \
    --config <(curl_config) \
    --header 'Content-Type: text/plain; charset=utf-8' \
    --data-binary "@$spool_file" --output "$response_file" --write-out '%{http_code}' \
    "$url" 2>"$errors_file") || curl_rc=$?
  retry=0
  case $curl_rc in
    0) [[ $http_code == 5* || $http_code == 408 || $http_code == 429 ]] && retry=1 ;;
    5 | 6 | 7 | 28 | 52 | 55 | 56) retry=1 ;;  # resolve, connect, timeout, cut off
  esac
  ((retry && attempt < retries)) || break
  attempt=$((attempt + 1))
  sleep "$delay"
  delay=$((delay * 2))
done

answer=$(head -c 8192 -- "$response_file")
json_field() {  # a string, number or boolean member of the receiver's JSON answer
  local pattern="\"$1\"[[:space:]]*:[[:space:]]*(\"(([^\"\\\\]|\\\\.)*)\"|[A-Za-z0-9.+-]+)"
  [[ $answer =~ $pattern ]] || return 0
  local found=${BASH_REMATCH[1]}
  if [[ $found == \"* ]]; then
    found=${BASH_REMATCH[2]//\\\"/\"}
    found=${found//\\n/ }
    found=${found//\\\\/\\}
  fi
  printf '%s' "$found"
}
detail=$(json_field detail)
detail=${detail:-no detail in the answer}

if ((curl_rc != 0)); then
  say "not delivered to $webhook_url: $(tr '\n' ' ' <"$errors_file")"
  case $curl_rc in
    35 | 51 | 58 | 60 | 77 | 83 | 90 | 91)
      say "TLS problem: give the receiver's CA bundle with --ca_file (or fix its certificate)" ;;
  esac
  kept
  exit 1
fi
case $http_code in
  202)
    problems=$(json_field problems)
    printf 'flow_run_id=%s duplicate=%s records=%s problems=%s\n' "$(json_field flow_run_id)" \
      "$(json_field duplicate)" "$(json_field records)" "${problems:-0}"
    if [[ ${problems:-0} != 0 ]]; then
      first=$(json_field first_problems)
      [[ $answer =~ \"first_problems\":(\[[^]]*\]) ]] && first=${BASH_REMATCH[1]}
      say "$problems unreadable record(s), reported in the run too: $first"
    fi
    rm -f -- "$spool_file"
    exit 0 ;;
  401)
    say "the receiver refused the token (HTTP 401: $detail); check the token file against" \
        "MISP_NDR_WEBHOOK__TOKEN"
    kept
    exit 3 ;;
  3*)
    say "the receiver answered HTTP $http_code (a redirect): use the final URL, https:// if" \
        "it redirects there, as --webhook_url"
    kept
    exit 2 ;;
  4*)
    say "the receiver refused the batch (HTTP $http_code): $detail"
    kept
    exit 2 ;;
  *)
    say "not delivered (HTTP $http_code after $((attempt + 1)) attempt(s)): $detail"
    [[ $(json_field kept) == true ]] &&
      say "the receiver kept the payload as well: misp-ndr webhook --drain submits it"
    kept
    exit 1 ;;
esac
