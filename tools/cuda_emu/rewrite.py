#!/usr/bin/env python3
# cuda_emu/rewrite.py IN OUT: turns every kernel<<<cfg>>>(args) launch into an emulator call.
import sys
s = open(sys.argv[1]).read()
out, pos = [], 0
while True:
    i = s.find('<<<', pos)
    if i < 0:
        break
    # the callee: walk back over identifiers, ::, and balanced <...>
    j = i
    while j > 0:
        c = s[j - 1]
        if c.isalnum() or c in '_:':
            j -= 1
        elif c == '>':
            depth, k = 0, j - 1
            while True:
                if s[k] == '>': depth += 1
                elif s[k] == '<': depth -= 1
                if depth == 0: break
                k -= 1
            j = k
        else:
            break
    callee = s[j:i]
    e = s.find('>>>', i)
    cfg = s[i + 3:e]
    k = e + 3
    while s[k].isspace(): k += 1
    assert s[k] == '(', s[i - 40:k + 40]
    depth, m = 0, k
    while True:
        if s[m] == '(': depth += 1
        elif s[m] == ')':
            depth -= 1
            if depth == 0: break
        m += 1
    args = s[k + 1:m]
    out.append(s[pos:j])
    out.append('::emu::launch(::emu::cfg(%s), [&](auto... emu_a) { %s(emu_a...); }%s)' %
               (cfg, callee, (', ' + args) if args.strip() else ''))
    pos = m + 1
out.append(s[pos:])
open(sys.argv[2], 'w').write(''.join(out))
