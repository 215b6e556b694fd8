/*
 * What `firebreak tools add lime` must see in a LiME module: an ELF
 * relocatable object whose .modinfo names the module `lime` and the
 * kernel it was built for (VERMAGIC, given with -D). Compiled with
 * `gcc -c`; never loaded (the tests' insmod is a stand-in).
 */
__attribute__((section(".modinfo"), used)) static const char name[] = "name=lime";
__attribute__((section(".modinfo"), used)) static const char license[] = "license=GPL";
__attribute__((section(".modinfo"), used)) static const char vermagic[] = "vermagic=" VERMAGIC;
int init_module(void) { return 0; }
