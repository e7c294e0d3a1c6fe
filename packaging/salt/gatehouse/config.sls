# gatehouse.config: the secrets (0600; a null one removed) and the config
# (0640) beside them.
# The config is written only once `gatehouse check` accepts it: check_cmd
# runs on a temporary file in the config's own folder (tmp_dir), so secret
# files named relatively resolve as they will in force. It never touches
# the service: gatehouse reloads by itself when its file changes, and
# gatehouse.service reloads or restarts it when managed.
{%- from 'gatehouse/map.jinja' import gatehouse, gatehouse_dir with context %}

{%- for name in gatehouse.secrets | sort %}
{%-   if not name | regex_match('^([A-Za-z0-9_][A-Za-z0-9_.-]*)$') %}
{{ raise('gatehouse:secrets: `' ~ name ~ '` is not a plain file name') }}
{%-   endif %}

gatehouse-secret-{{ name }}:
{%-   if gatehouse.secrets[name] is none %}
  # A secret set to null is removed (an offboarded user's TOTP secret),
  # once the config no longer names it.
  file.absent:
    - name: {{ (gatehouse_dir ~ '/' ~ name) | json }}
    - require:
      - file: gatehouse-config
{%-   else %}
  file.managed:
    - name: {{ (gatehouse_dir ~ '/' ~ name) | json }}
    - contents_pillar: gatehouse:secrets:{{ name }}
    - user: {{ gatehouse.user }}
    - group: {{ gatehouse.group }}
    - mode: '0600'
    - makedirs: True
    # Never a secret in the state output.
    - show_changes: False
    - require_in:
      - file: gatehouse-config
{%-   endif %}
{%- endfor %}

gatehouse-config:
  file.managed:
    - name: {{ gatehouse.config_path | json }}
    - user: {{ gatehouse.user }}
    - group: {{ gatehouse.group }}
    - mode: '0640'
    - makedirs: True
    - tmp_dir: {{ gatehouse_dir | json }}
    - tmp_ext: .yaml
    - check_cmd: {{ gatehouse.bin }} check --config
    - contents: |
        # Written by the gatehouse Salt formula from pillar `gatehouse:config`.
        {{ gatehouse.config | yaml(False) | indent(8) }}
